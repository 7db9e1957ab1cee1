"""
The poller in a real django-q2 cluster (`manage.py qcluster` subprocesses)
against the simulator over HTTP, on the test database.
"""

import pytest

from runs import simulator, tasks
from runs.models import Run, RunEvent
from tests import test_poller
from tests.cluster import Cluster, wait_until
from tests.test_poller import SCRIPTED, start_run, statuses

# test_poller's simulator server and organisation, over this module's real-time `sim`.
server = test_poller.server
org = test_poller.org

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def sim():
    # Real time: the shortest scripted status (1.5 s) spans several poll
    # intervals even on a loaded machine.
    return simulator.ChampSimulator(time_scale=1.0)


@pytest.fixture
def clusters(tmp_path):
    from django_q.brokers import get_broker

    get_broker().purge_queue()  # nothing left over from another test
    started = []

    def start(**env):
        cluster = Cluster(tmp_path / f"qcluster-{len(started)}.log", **env)
        started.append(cluster)
        return cluster

    yield start
    for cluster in started:
        # A graceful stop waits for the running sweep to end; the test is over.
        cluster.kill()


def all_final():
    return not Run.objects.open().exists()


def started(cluster):
    wait_until(lambda: "running." in cluster.output(), timeout=30, message=cluster.output())
    return cluster


def test_a_real_cluster_drives_every_workflow_to_its_scripted_end(org, clusters, sim):
    # Cluster first: the scripted steps last ~1 s, less than a cold start.
    cluster = started(clusters())
    runs = {wf: start_run(org, wf, {"wf": wf}) for wf in SCRIPTED}
    tasks.kick_poller()
    wait_until(all_final, timeout=60, message="runs still open:\n" + cluster.output())
    for workflow_id, run in runs.items():
        run.refresh_from_db()
        assert statuses(run) == SCRIPTED[workflow_id], (workflow_id, cluster.output())
    assert sim.max_inflight() == 1


def test_a_cluster_killed_mid_sweep_loses_nothing_and_duplicates_nothing(org, clusters, sim):
    sim.register_workflow(
        9001, [("pending", 1.0), ("in_progress", 6.0), ("completed", 0)], output={"ok": True}
    )
    first = started(clusters())
    runs = [start_run(org, 9001, {"i": i}) for i in range(20)]
    tasks.kick_poller()
    wait_until(
        lambda: Run.objects.filter(status="in_progress").count() >= 10,
        timeout=60,
        message="the first cluster never polled:\n" + first.output(),
    )
    first.kill()  # SIGKILL mid-sweep: leases and the sweep slot are left behind
    assert Run.objects.open().exists()
    second = started(clusters())
    # What the one-minute schedule runs: it restarts polling once the dead
    # sweep's heartbeat is stale.
    wait_until(lambda: tasks.poll_watchdog() == "sweep enqueued", timeout=30)
    wait_until(all_final, timeout=90, message="runs still open:\n" + second.output())
    for run in runs:
        run.refresh_from_db()
        assert run.status == "completed"
        path = statuses(run)
        assert path[-1] == "completed"
        assert len(path) == len(set(path)), path  # every change recorded once
    assert sim.max_inflight() == 1


def test_two_sweeps_at_once_never_poll_a_run_twice_at_the_same_time(org, sim, settings):
    """RELIABILITY 22: concurrent sweeps share the runs; every change is recorded once."""
    import threading

    from django.db import connections

    settings.CHAMP_POLL_MAX_SWEEPS = 2
    settings.CHAMP_POLL_INTERVAL_SECONDS = 0.2
    settings.CHAMP_POLL_BATCH_SIZE = 20
    # Every status lasts >= 1 s, five poll intervals.
    sim.register_workflow(
        9003,
        [
            ("pending", 1.0),
            ("in_progress", 1.5),
            ("suspended", 1.5),
            ("in_progress", 1.5),
            ("completed", 0),
        ],
    )
    results = []

    def sweep():
        try:
            results.append(tasks.poll_sweep(max_seconds=40, idle_exit_seconds=3))
        finally:
            connections.close_all()

    threads = [threading.Thread(target=sweep) for _ in range(2)]
    for thread in threads:
        thread.start()
    # Sweeps first: a run's first status must not be over before polling starts.
    runs = [start_run(org, 9003, {"i": i}) for i in range(60)]
    for thread in threads:
        thread.join(60)
    assert all("polls" in result for result in results), results  # both got a slot
    assert len(results) == 2
    for run in runs:
        run.refresh_from_db()
        assert statuses(run) == SCRIPTED[simulator.WORKFLOW_SUSPEND_RESUME], statuses(run)
    assert sim.max_inflight() == 1  # no run was ever polled by both at once
    assert sim.post_count == 60


@pytest.mark.skipif(
    "postgres" not in __import__("os").environ.get("DATABASE_URL", ""),
    reason="several clusters sharing one database is the PostgreSQL + Redis configuration",
)
def test_three_clusters_follow_hundreds_of_runs_and_survive_losing_one(org, clusters, sim):
    sim.register_workflow(
        9002,
        # Every status lasts >= 3 s, three poll intervals
        # (and a run left by the killed cluster has time to be taken over).
        [
            ("pending", 3.0),
            ("in_progress", 6.0),
            ("suspended", 5.0),
            ("in_progress", 5.0),
            ("completed", 0),
        ],
        output={"ok": True},
    )
    env = {
        "CHAMP_POLL_MAX_SWEEPS": 3,
        "CHAMP_POLL_BATCH_SIZE": 50,
        "CHAMP_POLL_INTERVAL_SECONDS": 1,
    }
    running = [started(clusters(**env)) for _ in range(3)]
    for _ in range(3):
        tasks.kick_poller(dedupe=False)  # sweeps first, then the runs
    runs = [start_run(org, 9002, {"i": i}) for i in range(150)]
    wait_until(
        lambda: RunEvent.objects.filter(to_status="suspended").count() >= len(runs) // 3,
        timeout=60,
        message="\n---\n".join(cluster.output() for cluster in running),
    )
    running[0].kill()  # one machine dies mid-sweep
    wait_until(lambda: tasks.poll_watchdog() in ("sweep enqueued", "sweeps alive"), timeout=5)
    wait_until(all_final, timeout=120, message=running[1].output())
    expected = ["unknown", "pending", "in_progress", "suspended", "in_progress", "completed"]
    for run in runs:
        run.refresh_from_db()
        assert statuses(run) == expected, statuses(run)
    assert sim.max_inflight() == 1
