"""Shared set-up for the benchmarks: Django on a bench database, a simulator process."""

import os
import resource
import socket
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parents[2]
BENCH_DIR = ROOT / "var" / "bench"


def setup_django() -> None:
    """
    Point Django at a bench database of its own, emptied first: a fresh SQLite
    file, or with ``DATABASE_URL=postgres://…/NAME`` the database ``NAME_bench``
    on the same server (created when missing), never ``NAME`` itself.
    """
    BENCH_DIR.mkdir(parents=True, exist_ok=True)
    url = os.environ.get("DATABASE_URL", "")
    if url.startswith(("postgres://", "postgresql://")):
        os.environ["DATABASE_URL"] = _postgres_bench_database(url)
    else:
        db = BENCH_DIR / "bench.sqlite3"
        for suffix in ("", "-wal", "-shm"):
            Path(f"{db}{suffix}").unlink(missing_ok=True)
        os.environ["DATABASE_URL"] = f"sqlite:///{db}"
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "champ_portal.settings")
    os.environ.setdefault("CHAMP_PORTAL_LOG_LEVEL", "WARNING")
    os.environ.setdefault("CHAMP_PORTAL_CLUSTER_NAME", f"champ_portal_bench_{os.getpid()}")
    import django

    django.setup()
    from django.conf import settings

    # The benchmarks drive pages with django.test.Client over plain HTTP.
    settings.ALLOWED_HOSTS = [*settings.ALLOWED_HOSTS, "testserver"]
    settings.SECURE_SSL_REDIRECT = False
    from django.core.management import call_command

    call_command("migrate", "--noinput", verbosity=0)
    # A PostgreSQL bench database is reused: start from empty tables.
    call_command("flush", "--noinput", verbosity=0)


def _postgres_bench_database(url: str) -> str:
    """The URL of ``<name>_bench`` beside the database ``url`` names, created if missing."""
    import psycopg
    from psycopg import sql

    parts = urlsplit(url)
    name = parts.path.lstrip("/") or "postgres"
    bench_name = name if name.endswith("_bench") else f"{name}_bench"
    maintenance = urlunsplit(parts._replace(path="/postgres"))
    with psycopg.connect(maintenance, autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [bench_name])
        if exists.fetchone() is None:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(bench_name)))
    return urlunsplit(parts._replace(path=f"/{bench_name}"))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class SimulatorProcess:
    """`manage.py champ_simulator` in its own process (it must not share our GIL)."""

    def __init__(self, *args: str):
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.process = subprocess.Popen(
            [sys.executable, "manage.py", "champ_simulator", "--port", str(self.port), *args],
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError("the simulator did not start")

    def stats(self) -> dict:
        import httpx

        return httpx.get(f"{self.base_url}/_sim/stats", timeout=30).json()

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


def print_table(title: str, rows: list[tuple]) -> None:
    print(f"\n## {title}")
    widths = [max(len(str(row[i])) for row in rows) for i in range(len(rows[0]))]
    for n, row in enumerate(rows):
        print("  " + "  ".join(str(cell).ljust(widths[i]) for i, cell in enumerate(row)))
        if n == 0:
            print("  " + "  ".join("-" * w for w in widths))
