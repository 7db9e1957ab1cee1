"""
The poller in a real django-q2 cluster (`manage.py qcluster` subprocesses)
against the simulator over HTTP, on the test database.
"""

import pytest

from runs import organisations as org_actions
from runs import simulator, tasks
from runs.models import Run
from runs.simulator_server import SimulatorServer
from tests.cluster import Cluster, wait_until
from tests.test_poller import SCRIPTED, start_run, statuses

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def sim():
    return simulator.ChampSimulator(time_scale=0.5)


@pytest.fixture
def server(sim):
    with SimulatorServer(sim) as server:
        yield server


@pytest.fixture
def org(make_org, alice, server):
    organisation = make_org("clustered", api_base_url=server.base_url, admin=[alice])
    org_actions.token_add(
        organisation=organisation, label="sim", secret=simulator.DEMO_TOKEN, user=alice
    )
    return organisation


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
