"""
History benchmark (issue 6): the run history, the admin's Run list and the
export, at growing numbers of runs, each next to its baseline in the same run.

For each size it seeds runs (with one or two events each) straight into the
tables, then measures the server time of each page through ``django.test.Client``
(median of ``repeats`` after one warm-up request):

* the history page: no filter, a status filter, organisation + a 30-day date
  range, a text search for a common and for a rare term, the last page and a
  deep keyset page (a cursor 90 % of the way down);
* the admin's Run changelist (capped count, cheap filters and date drill-down)
  and, as the baseline, Django admin's *default* change list on the same data:
  a plain ``ModelAdmin`` with the same columns, filters and date hierarchy and
  the default paginator and counts, on a separate ``AdminSite``;
* the CSV and JSON exports of every run: rows/s, and the peak Python memory
  (``tracemalloc``) of a full export.

    python -m tests.bench.bench_history                 # 10k and 1M runs
    python -m tests.bench.bench_history 10000 100000    # other sizes

Works on the embedded SQLite (a file under var/bench/, fresh each time) and on
PostgreSQL (``DATABASE_URL``; its tables are flushed first). Run alone it
uses var/bench/history.sqlite3 (under ``make bench``, the harness's database)
and writes var/bench/history.json.
"""

import json
import os
import random
import statistics
import sys
import time
import tracemalloc
from datetime import timedelta
from pathlib import Path

SEED_CHUNK = 20_000
#: Runs spread over this many days before "now".
SPAN_DAYS = 365
STATUSES = [
    ("completed", 70),
    ("failed", 10),
    ("pending", 4),
    ("in_progress", 4),
    ("suspended", 2),
    ("skipped", 4),
    ("rejected", 4),
    ("unknown", 2),
]
REGIONS = ["north", "south", "east", "west"]
COMMON_TERM = "north"  # in a quarter of the inputs
RARE_TERM = "cust-4242"  # in one input in 5,000


# --- Seeding ------------------------------------------------------------------------------


class World:
    """The organisations, users and presets the seeded runs belong to."""

    def __init__(self):
        from django.contrib.auth import get_user_model

        from runs.models import Membership, Organisation, Role, WorkflowPreset

        User = get_user_model()
        self.viewer = User.objects.create_superuser("bench-history", password="x" * 20)
        self.users = [self.viewer] + [
            User.objects.create_user(f"bench-user-{n}", password="x" * 20) for n in range(19)
        ]
        # A and B are the viewer's; C is someone else's (scoping must hide it).
        self.orgs = [
            Organisation.objects.create(name=f"Bench {c}", slug=f"bench-{c.lower()}")
            for c in "ABC"
        ]
        self.org_weights = [60, 30, 10]
        for user in self.users:
            for org in self.orgs[:2] if user in self.users[:10] else self.orgs[2:]:
                Membership.objects.create(user=user, organisation=org, role=Role.OPERATOR)
        self.presets = {
            org.pk: [
                WorkflowPreset.objects.create(
                    organisation=org, name=f"{org.name} preset {n}", workflow_id=100 + n
                ).pk
                for n in range(10)
            ]
            for org in self.orgs
        }
        self.seeded = 0


def seed(world: World, total: int) -> float:
    """Add runs (and their events) until there are ``total``; return the seconds it took."""
    from django.db import connection, transaction
    from django.utils import timezone

    from runs.jsondiff import json_digest
    from runs.models import FINAL_STATUSES, Run, RunEvent

    started = time.perf_counter()
    rng = random.Random(world.seeded)
    statuses, weights = zip(*STATUSES, strict=True)
    now = timezone.now()
    first = now - timedelta(days=SPAN_DAYS)
    ops = connection.ops
    run_columns = [
        "id", "organisation_id", "preset_id", "workflow_id", "champ_run_id", "status",
        "input", "input_digest", "output", "error", "champ_url", "triggered_by_id", "triggered_at",
        "status_changed_at", "finished_at", "poll_attempts", "poll_failures",
        "last_poll_error", "lease_owner",
    ]  # fmt: skip
    event_columns = [
        "id", "run_id", "seq", "from_status", "to_status", "observed_at", "source", "message",
    ]  # fmt: skip
    run_id = (Run.objects.order_by("-id").values_list("id", flat=True).first() or 0) + 1
    event_id = (RunEvent.objects.order_by("-id").values_list("id", flat=True).first() or 0) + 1
    target = total - world.seeded
    while world.seeded < total:
        batch = min(SEED_CHUNK, total - world.seeded)
        runs, events = [], []
        for _ in range(batch):
            n = world.seeded
            org = rng.choices(world.orgs, world.org_weights)[0]
            status = rng.choices(statuses, weights)[0]
            # Ids follow time (with some jitter), as they do in real life.
            at = first + timedelta(seconds=SPAN_DAYS * 86400 * (n + rng.random()) / total)
            took = timedelta(seconds=rng.expovariate(1 / 30))
            finished = at + took if status in FINAL_STATUSES else None
            preset = rng.choice(world.presets[org.pk]) if rng.random() < 0.7 else None
            payload = {
                "customer": f"cust-{n % 5000}",
                "region": REGIONS[n % 4],
                "amount": n % 1000,
            }
            output = {"result": "ok", "rows": n % 97} if status == "completed" else None
            runs.append(
                (
                    run_id, org.pk, preset, 100 + n % 10, 1_000_000 + run_id, status,
                    ops.adapt_json_value(payload, None), json_digest(payload),
                    ops.adapt_json_value(output, None) if output is not None else None,
                    "boom" if status == "failed" else "", "",
                    world.users[n % 10 if org is not world.orgs[2] else 10 + n % 10].pk,
                    ops.adapt_datetimefield_value(at),
                    ops.adapt_datetimefield_value(finished or at),
                    ops.adapt_datetimefield_value(finished),
                    0, 0, "", "",
                )
            )  # fmt: skip
            events.append(
                (event_id, run_id, 1, "", "unknown", ops.adapt_datetimefield_value(at),
                 "trigger", "")
            )  # fmt: skip
            event_id += 1
            if status != "unknown":
                events.append(
                    (event_id, run_id, 2, "unknown", status,
                     ops.adapt_datetimefield_value(finished or at), "poll", "")
                )  # fmt: skip
                event_id += 1
            run_id += 1
            world.seeded += 1
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.executemany(_insert_sql(Run, run_columns), runs)
            cursor.executemany(_insert_sql(RunEvent, event_columns), events)
        print(f"  seeded {world.seeded:,} runs", end="\r", file=sys.stderr, flush=True)
    _reset_sequences()
    _analyze()
    print(file=sys.stderr)
    elapsed = time.perf_counter() - started
    print(f"  {target:,} runs seeded in {elapsed:.0f} s", file=sys.stderr)
    return elapsed


def _insert_sql(model, columns: list[str]) -> str:
    from django.db import connection

    quote = connection.ops.quote_name
    return (
        f"INSERT INTO {quote(model._meta.db_table)} ({', '.join(quote(c) for c in columns)}) "
        f"VALUES ({', '.join(['%s'] * len(columns))})"
    )


def _reset_sequences() -> None:
    from django.core.management.color import no_style
    from django.db import connection

    from runs.models import Run, RunEvent

    statements = connection.ops.sequence_reset_sql(no_style(), [Run, RunEvent])
    with connection.cursor() as cursor:
        for sql in statements:
            cursor.execute(sql)


def _analyze() -> None:
    """
    The tables as a live database keeps them: fresh planner statistics (as
    autovacuum or `PRAGMA optimize` give) and, on PostgreSQL, the visibility
    map autovacuum maintains, without which an index-only scan of freshly
    loaded rows visits the table anyway and timings depend on whether
    autovacuum happened to finish before the measurement.
    """
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("VACUUM ANALYZE" if connection.vendor == "postgresql" else "ANALYZE")


# --- Measuring ----------------------------------------------------------------------------


def _default_admin_urls():
    """Django admin's default change list for runs, on its own AdminSite, next to the project."""
    from django.contrib import admin
    from django.urls import path

    from champ_portal import urls as project_urls
    from runs.models import Run

    site = admin.AdminSite(name="bench_default_admin")

    class DefaultRunAdmin(admin.ModelAdmin):
        list_display = [
            "id", "status", "organisation", "workflow_id", "preset", "champ_run_id",
            "triggered_by", "triggered_at", "finished_at",
        ]  # fmt: skip
        list_filter = ["status", "organisation", "workflow_id", "triggered_by"]
        search_fields = ["=champ_run_id", "=workflow_id"]
        date_hierarchy = "triggered_at"
        show_full_result_count = True  # Django's default

    site.register(Run, DefaultRunAdmin)
    patterns = [path("bench-default-admin/", site.urls), *project_urls.urlpatterns]
    return type("BenchUrls", (), {"urlpatterns": patterns})


def _median_ms(client, url: str, repeats: int) -> float:
    response = client.get(url)  # warm-up (and a check)
    assert response.status_code == 200, (url, response.status_code)
    _consume(response)
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        _consume(client.get(url))
        times.append(time.perf_counter() - started)
    return round(statistics.median(times) * 1000, 1)


def _consume(response) -> int:
    if response.streaming:
        return sum(len(chunk) for chunk in response.streaming_content)
    return len(response.content)


def _consume_export(response, rows: int) -> int:
    """Read a whole export; check it streamed every row (a header or bracket line each end)."""
    assert response.status_code == 200 and response.streaming, response.status_code
    size = lines = 0
    for chunk in response.streaming_content:
        size += len(chunk)
        lines += chunk.count(b"\n")
    assert lines in (rows + 1, rows + 2), f"exported {lines} lines for {rows} runs"
    return size


def _deep_cursor(world: World) -> str:
    """A keyset cursor 90 % of the way down the viewer's history (what "Next" links carry)."""
    from runs.history import SortKey
    from runs.models import Run

    mine = Run.objects.filter(organisation__in=world.orgs[:2]).order_by("-triggered_at", "-id")
    depth = int(mine.count() * 0.9)
    run = mine.only("id", "triggered_at")[depth : depth + 1].get()
    return SortKey.parse("-started").cursor_of(run)


def _export(client, url: str, rows: int) -> dict:
    started = time.perf_counter()
    size = _consume_export(client.get(url), rows)
    elapsed = time.perf_counter() - started
    tracemalloc.start()
    _consume_export(client.get(url), rows)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return {
        "rows_per_s": round(rows / elapsed),
        "mb": round(size / 1e6, 1),
        "peak_mb": round(peak / 1e6, 2),
    }


def measure(world: World, repeats: int) -> dict:
    from django.db import connection
    from django.test import Client
    from django.test.utils import override_settings
    from django.utils import timezone

    from runs.models import Run

    client = Client()
    client.force_login(world.viewer)
    today = timezone.localdate()
    window = {
        "from": (today - timedelta(days=60)).isoformat(),
        "to": (today - timedelta(days=30)).isoformat(),
    }
    pages = {
        "history": "/runs/",
        "history_status": "/runs/?status=failed&status=suspended",
        "history_org_dates": (
            f"/runs/?organisation={world.orgs[1].slug}"
            f"&started_from={window['from']}&started_to={window['to']}"
        ),
        "history_text_common": f"/runs/?q={COMMON_TERM}",
        "history_text_rare": f"/runs/?q={RARE_TERM}",
        "history_last_page": "/runs/?page=last",
        "history_deep_page": f"/runs/?after={_deep_cursor(world)}",
        "admin_runs": "/admin/runs/run/",
        "admin_runs_filtered": "/admin/runs/run/?status__exact=failed",
        "default_admin_runs": "/bench-default-admin/runs/run/",
        "default_admin_runs_filtered": "/bench-default-admin/runs/run/?status__exact=failed",
    }
    row: dict = {"runs": world.seeded, "database": connection.vendor}
    # The production settings, less the HTTPS redirect (the test client speaks HTTP).
    with override_settings(
        ROOT_URLCONF=_default_admin_urls(),
        DEBUG=False,
        SECURE_SSL_REDIRECT=False,
        ALLOWED_HOSTS=["testserver"],
    ):
        for name, url in pages.items():
            row[f"{name}_ms"] = _median_ms(client, url, repeats)
            print(f"  {name}: {row[f'{name}_ms']} ms", file=sys.stderr)
        mine = Run.objects.for_user(world.viewer).count()
        for kind in ("csv", "json"):
            result = _export(client, f"/runs/export.{kind}", mine)
            for key, value in result.items():
                row[f"export_{kind}_{key}"] = value
            print(f"  export {kind}: {result}", file=sys.stderr)
    row["export_rows"] = mine
    return row


def run(sizes=(10_000, 1_000_000), repeats: int = 5) -> list[dict]:
    """Seed up to each size in turn and measure; one dict of numbers per size."""
    world = World()
    results = []
    for size in sorted(sizes):
        print(f"\n# {size:,} runs", file=sys.stderr)
        seconds = seed(world, size)
        row = measure(world, repeats)
        row["seed_s"] = round(seconds, 1)
        results.append(row)
    if len(results) > 1:
        results.append(_ratios(results[0], results[-1]))
    return results


def _ratios(small: dict, large: dict) -> dict:
    """Large / small for each page (the target: at most 2), and vs the default admin."""
    ratios = {
        # An int, as the `make bench` harness formats it; "compares" says what this row is.
        "runs": large["runs"],
        "compares": f"ratios, {large['runs']:,} runs / {small['runs']:,} runs",
        "database": large["database"],
    }
    for key, value in large.items():
        if key.endswith("_ms") and small.get(key):
            ratios[key.replace("_ms", "_x")] = round(value / small[key], 2)
    for size, row in (("small", small), ("large", large)):
        ratios[f"admin_vs_default_{size}"] = round(
            row["admin_runs_ms"] / row["default_admin_runs_ms"], 2
        )
    ratios["export_peak_mb_x"] = round(
        large["export_csv_peak_mb"] / max(small["export_csv_peak_mb"], 0.01), 2
    )
    return ratios


def main(argv: list[str]) -> None:
    from tests.bench.common import BENCH_DIR, print_table, setup_django

    sizes = tuple(int(arg.replace("_", "")) for arg in argv) or (10_000, 1_000_000)
    if "DATABASE_URL" not in os.environ:
        # Its own file, so that another benchmark's set-up cannot pull it away.
        db = BENCH_DIR / "history.sqlite3"
        BENCH_DIR.mkdir(parents=True, exist_ok=True)
        for suffix in ("", "-wal", "-shm"):
            Path(f"{db}{suffix}").unlink(missing_ok=True)
        os.environ["DATABASE_URL"] = f"sqlite:///{db}"
    setup_django()
    results = run(sizes=sizes)
    keys = list(dict.fromkeys(key for row in results for key in row))
    headers = [f"{row['runs']:,} runs" for row in results]
    if len(results) > 1:
        headers[-1] = "ratio"  # the last row compares the largest size with the smallest
    table = [("metric", *headers)]
    table += [(key, *(str(row.get(key, "")) for row in results)) for key in keys if key != "runs"]
    print_table("Run history benchmark", table)
    out = BENCH_DIR / "history.json"
    out.write_text(json.dumps(results, indent=2, default=str))
    print(f"\nResults written to {out}")


if __name__ == "__main__":
    main(sys.argv[1:])
