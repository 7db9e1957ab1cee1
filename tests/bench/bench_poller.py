"""
Poller benchmarks, each next to its baseline in the same run:

* throughput: polls/s of one sweep (claim → GET → parse → record → next poll)
  against the simulator at zero latency (and again at a realistic latency),
  next to a naive sequential ``httpx.Client`` GET + ``save()`` loop and the raw
  client ceiling (the same GETs through ``AsyncChamp`` with no database work),
  in interleaved rounds;
* latency: runs whose status changes every few seconds, followed by a real
  ``qcluster``: p50/p95 from the change at Champ to the event row, GETs per
  run per minute, CPU and peak memory of the cluster;
* scale-out (PostgreSQL + Redis only): polls/s with one cluster, then two.
"""

import asyncio
import os
import signal
import statistics
import subprocess
import sys
import time

from tests.bench.common import ROOT, SimulatorProcess, peak_rss_mb, percentile

THROUGHPUT_SECONDS = 5.0


def _org(base_url: str, slug: str):
    from django.contrib.auth import get_user_model

    from runs import organisations as org_actions
    from runs import simulator
    from runs.models import Organisation

    user, _ = get_user_model().objects.get_or_create(username="bench")
    organisation = Organisation.objects.create(name=slug, slug=slug, api_base_url=base_url)
    org_actions.token_add(
        organisation=organisation, label="bench", secret=simulator.DEMO_TOKEN, user=user
    )
    return organisation, user


def seed_open_runs(organisation, workflow_id: int, count: int) -> list[tuple[int, float]]:
    """Trigger ``count`` runs at the simulator and store them open; return (pk, created)."""
    from django.utils import timezone

    from runs import champ, simulator
    from runs.models import Run

    now = timezone.now()
    created = []
    with champ.make_client() as client:
        for _ in range(count):
            run = champ.trigger(
                base_url=organisation.api_base_url,
                token=simulator.DEMO_TOKEN,
                workflow_id=workflow_id,
                input={},
                client=client,
            )
            created.append((run, time.time()))
    rows = Run.objects.bulk_create(
        [
            Run(
                organisation=organisation,
                workflow_id=workflow_id,
                champ_run_id=run.id,
                champ_url=run.url or "",
                status=run.status,
                input={},
                triggered_at=now,
                status_changed_at=now,
                next_poll_at=now,
            )
            for run, _ in created
        ],
        batch_size=500,
    )
    return [(row.pk, at) for row, (_, at) in zip(rows, created, strict=True)]


def _gets(sim: SimulatorProcess) -> int:
    return sim.stats()["gets"]


def measure_sweep(sim: SimulatorProcess, seconds: float) -> dict:
    """One sweep, in this process, exactly as the cluster runs it."""
    from django.conf import settings

    from runs import tasks

    settings.CHAMP_POLL_INTERVAL_SECONDS = 0.0  # every run is due again at once
    before, cpu0, t0 = _gets(sim), time.process_time(), time.monotonic()
    tasks.poll_sweep(max_seconds=seconds, idle_exit_seconds=1)
    elapsed, cpu = time.monotonic() - t0, time.process_time() - cpu0
    polls = _gets(sim) - before
    return {"polls_per_s": polls / elapsed, "cpu_s": cpu, "seconds": elapsed}


def measure_naive(sim: SimulatorProcess, organisation, seconds: float) -> dict:
    """The baseline: one sequential GET and one save() per run."""
    from django.utils import timezone

    from runs import champ, simulator
    from runs.models import Run

    runs = list(Run.objects.filter(organisation=organisation))
    before, t0 = _gets(sim), time.monotonic()
    with champ.make_client() as client:
        while time.monotonic() - t0 < seconds:
            for run in runs:
                fetched = champ.fetch_run(
                    base_url=organisation.api_base_url,
                    token=simulator.DEMO_TOKEN,
                    workflow_id=run.workflow_id,
                    run_id=run.champ_run_id,
                    client=client,
                )
                run.last_polled_at = timezone.now()
                run.next_poll_at = run.last_polled_at
                run.output = fetched.output
                run.save()
                if time.monotonic() - t0 >= seconds:
                    break
    elapsed = time.monotonic() - t0
    return {"polls_per_s": (_gets(sim) - before) / elapsed, "seconds": elapsed}


def measure_raw(sim: SimulatorProcess, organisation, seconds: float, concurrency: int) -> dict:
    """The ceiling: the same GETs through AsyncChamp, no database at all."""
    from runs import champ, simulator
    from runs.models import Run

    targets = list(
        Run.objects.filter(organisation=organisation).values_list("workflow_id", "champ_run_id")
    )

    async def main() -> int:
        done = 0
        async with champ.AsyncChamp(max_connections=concurrency) as client:
            t0 = time.monotonic()
            while time.monotonic() - t0 < seconds:
                batch = targets[:200]
                targets[:] = targets[200:] + batch
                await asyncio.gather(
                    *(
                        client.fetch_run(
                            base_url=organisation.api_base_url,
                            token=simulator.DEMO_TOKEN,
                            workflow_id=wf,
                            run_id=rid,
                        )
                        for wf, rid in batch
                    )
                )
                done += len(batch)
        return done

    before, t0 = _gets(sim), time.monotonic()
    asyncio.run(main())
    elapsed = time.monotonic() - t0
    return {"polls_per_s": (_gets(sim) - before) / elapsed, "seconds": elapsed}


def throughput(open_runs: int = 2000, *, rounds: int = 3, latency_ms: float = 0) -> dict:
    """
    Sweep vs naive vs raw, same simulator, same runs: ``rounds`` rounds of the
    three one after the other, and the median of each, so a noisy moment
    weighs on all three alike rather than on one.
    """
    from django.conf import settings

    from runs import simulator
    from runs.models import Run

    # time_scale 1000: the slow workflow stays pending for ~8 minutes.
    args = ("--time-scale", "1000", "--latency-ms", str(latency_ms))
    samples: dict[str, list[dict]] = {"raw": [], "sweep": [], "naive": []}
    with SimulatorProcess(*args) as sim:
        organisation, _ = _org(sim.base_url, f"bench-throughput-{latency_ms:g}")
        seed_open_runs(organisation, simulator.WORKFLOW_SLOW, open_runs)
        for _ in range(rounds):
            samples["raw"].append(
                measure_raw(sim, organisation, THROUGHPUT_SECONDS, settings.CHAMP_POLL_CONCURRENCY)
            )
            samples["sweep"].append(measure_sweep(sim, THROUGHPUT_SECONDS))
            samples["naive"].append(measure_naive(sim, organisation, THROUGHPUT_SECONDS))
    # These runs were for measuring only: they must not load the next benchmark.
    Run.objects.filter(organisation=organisation).delete()
    raw, sweep, naive = (
        statistics.median(sample["polls_per_s"] for sample in samples[name])
        for name in ("raw", "sweep", "naive")
    )
    cpu_per_poll = statistics.median(
        sample["cpu_s"] / max(1.0, sample["polls_per_s"] * sample["seconds"])
        for sample in samples["sweep"]
    )
    return {
        "open_runs": open_runs,
        "champ_latency_ms": latency_ms,
        "rounds": rounds,
        "sweep_polls_per_s": round(sweep),
        "sweep_cpu_s_per_1000_polls": round(cpu_per_poll * 1000, 3),
        "naive_polls_per_s": round(naive),
        "raw_client_polls_per_s": round(raw),
        "ratio_vs_naive": round(sweep / naive, 1),
        "ratio_vs_raw": round(sweep / raw, 2),
        "peak_rss_mb": round(peak_rss_mb()),
    }


class GroupSampler:
    """CPU and memory of a process group (a qcluster and its workers) from /proc."""

    def __init__(self, pgid: int):
        self.pgid = pgid
        self.cpu: dict[int, float] = {}
        self.peak_rss_total = 0
        self._tick = os.sysconf("SC_CLK_TCK")
        self._page = os.sysconf("SC_PAGE_SIZE")

    def sample(self) -> None:
        rss_total = 0
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                with open(f"/proc/{entry}/stat") as handle:
                    fields = handle.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            # After the ")": state ppid pgrp … utime(12) stime(13) … rss(22)
            if int(fields[2]) != self.pgid:
                continue
            cpu = (int(fields[11]) + int(fields[12])) / self._tick
            self.cpu[int(entry)] = max(self.cpu.get(int(entry), 0.0), cpu)
            rss_total += int(fields[21]) * self._page
        self.peak_rss_total = max(self.peak_rss_total, rss_total)

    def cpu_seconds(self) -> float:
        return sum(self.cpu.values())


def _cluster_env(**extra) -> dict:
    from django.conf import settings

    env = dict(os.environ)
    env.update(
        {
            "CHAMP_PORTAL_SECRET_KEY": settings.SECRET_KEY,
            "CHAMP_PORTAL_TOKEN_KEYS": settings.CHAMP_PORTAL_TOKEN_KEYS,
            "CHAMP_PORTAL_LOG_LEVEL": "WARNING",
        }
    )
    env.update({k: str(v) for k, v in extra.items()})
    return env


def _start_cluster(**env) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "manage.py", "qcluster"],
        cwd=ROOT,
        env=_cluster_env(**env),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )


def _stop_cluster(process: subprocess.Popen) -> None:
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(60)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def latency(open_runs: int = 1000, time_scale: float = 2.0, clusters: int = 1) -> dict:
    """Real qclusters (``clusters`` of them, one process group each) follow runs
    that change every few seconds."""
    from runs import simulator, tasks
    from runs.models import Run, RunEvent, SweepSlot

    # suspend-resume at time_scale 2 changes status at 1, 4, 10 and 13 s.
    path = simulator.CATALOGUE[simulator.WORKFLOW_SUSPEND_RESUME].path
    offsets, elapsed = [], 0.0
    for status, seconds in path[1:]:
        elapsed += path[len(offsets)][1]
        offsets.append((status, elapsed * time_scale))
    # Slots a killed cluster of an earlier benchmark still holds would keep
    # sweeps from starting until their heartbeats go stale.
    SweepSlot.objects.all().delete()
    with SimulatorProcess("--time-scale", str(time_scale)) as sim:
        organisation, _ = _org(sim.base_url, f"bench-latency-{open_runs}-{clusters}")
        processes = [_start_cluster() for _ in range(clusters)]
        time.sleep(3)  # let the clusters come up before the first change is due
        t0 = time.monotonic()
        created = dict(seed_open_runs(organisation, simulator.WORKFLOW_SUSPEND_RESUME, open_runs))
        tasks.kick_poller()
        deadline = time.monotonic() + 120
        samplers = [GroupSampler(process.pid) for process in processes]
        mine = Run.objects.open().filter(organisation=organisation)
        while mine.exists() and time.monotonic() < deadline:
            for sampler in samplers:
                sampler.sample()
            time.sleep(0.5)
        wall = time.monotonic() - t0
        for sampler in samplers:
            sampler.sample()
        gets = sim.stats()["gets"]
        for process in processes:
            _stop_cluster(process)
    latencies, missed, example = [], 0, None
    events = RunEvent.objects.filter(run__organisation=organisation, source="poll")
    seen = {}
    for run_id, to_status, observed in events.values_list("run_id", "to_status", "observed_at"):
        seen.setdefault(run_id, []).append((to_status, observed.timestamp()))
    for run_id, created_at in created.items():
        observed = seen.get(run_id, [])
        if [s for s, _ in observed] != [s for s, _ in offsets]:
            missed += 1
            example = example or [s for s, _ in observed]
            continue
        for (_, at), (_, offset) in zip(observed, offsets, strict=True):
            latencies.append(at - (created_at + offset))
    still_open = Run.objects.open().filter(organisation=organisation).count()
    cluster_cpu = sum(sampler.cpu_seconds() for sampler in samplers)
    return {
        "open_runs": open_runs,
        "clusters": clusters,
        "changes_measured": len(latencies),
        "runs_with_a_missed_or_extra_change": missed,
        "runs_left_open": still_open,
        "example_of_a_missed_path": example,
        "latency_p50_s": round(percentile(latencies, 50), 3),
        "latency_p95_s": round(percentile(latencies, 95), 3),
        "latency_max_s": round(max(latencies, default=float("nan")), 3),
        "gets_per_run_per_minute": round(gets / open_runs / (wall / 60), 1),
        "cluster_cpu_s": round(cluster_cpu, 1),
        "cluster_cpu_percent_of_one_core": round(100 * cluster_cpu / wall),
        "cluster_processes": sum(len(sampler.cpu) for sampler in samplers),
        "cluster_peak_rss_mb_total": round(
            sum(sampler.peak_rss_total for sampler in samplers) / 2**20
        ),
        "wall_s": round(wall, 1),
    }


def scale_out(open_runs: int = 2000, seconds: float = 15.0) -> dict | None:
    """Polls/s with one cluster, then with two (PostgreSQL + Redis only)."""
    from django.db import OperationalError, connection
    from django.utils import timezone

    from runs import simulator, tasks
    from runs.models import Run, SweepSlot

    if connection.vendor != "postgresql":
        return None
    results, usage = {}, {}
    with SimulatorProcess("--time-scale", "1000") as sim:
        organisation, _ = _org(sim.base_url, "bench-scale")
        seed_open_runs(organisation, simulator.WORKFLOW_SLOW, open_runs)
        for clusters in (1, 2):
            SweepSlot.objects.all().delete()
            env = {
                "CHAMP_POLL_INTERVAL_SECONDS": "0",
                "CHAMP_POLL_MAX_SWEEPS": str(clusters),
                "CHAMP_PORTAL_WORKERS": "2",
                "CHAMP_POLL_SWEEP_SECONDS": str(int(seconds) + 10),
            }
            processes = [_start_cluster(**env) for _ in range(clusters)]
            time.sleep(4)
            for _ in range(clusters):
                tasks.kick_poller(dedupe=False)
            time.sleep(3)  # sweeps start
            samplers = [GroupSampler(process.pid) for process in processes]
            for sampler in samplers:
                sampler.sample()
            cpu_before = sum(sampler.cpu_seconds() for sampler in samplers)
            before, t0 = sim.stats()["gets"], time.monotonic()
            while time.monotonic() - t0 < seconds:
                time.sleep(0.5)
                for sampler in samplers:
                    sampler.sample()
            elapsed = time.monotonic() - t0
            rate = (sim.stats()["gets"] - before) / elapsed
            cpu = sum(sampler.cpu_seconds() for sampler in samplers) - cpu_before
            usage[clusters] = (
                round(100 * cpu / elapsed),
                round(sum(sampler.peak_rss_total for sampler in samplers) / 2**20),
            )
            for process in processes:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
            # The killed clusters' database sessions may hold row locks for a
            # moment after their processes are gone.
            for attempt in range(10):
                try:
                    Run.objects.filter(organisation=organisation).update(
                        lease_owner="", lease_until=None, next_poll_at=timezone.now()
                    )
                    break
                except OperationalError:
                    if attempt == 9:
                        raise
                    time.sleep(1)
            results[clusters] = rate
            time.sleep(1)
    return {
        "open_runs": open_runs,
        "one_cluster_polls_per_s": round(results[1]),
        "two_clusters_polls_per_s": round(results[2]),
        "ratio": round(results[2] / results[1], 2),
        "one_cluster_cpu_percent_of_one_core": usage[1][0],
        "two_clusters_cpu_percent_of_one_core": usage[2][0],
        "one_cluster_peak_rss_mb": usage[1][1],
        "two_clusters_peak_rss_mb": usage[2][1],
    }
