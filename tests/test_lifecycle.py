"""The one door for status changes: conditional, one event per change, final is final."""

import pytest

from runs import lifecycle
from runs.models import AppendOnlyError, EventSource, Run, RunEvent, RunStatus


@pytest.fixture
def run(org_a, alice):
    run = lifecycle.open_run(organisation=org_a, workflow_id=101, input={}, triggered_by=alice)
    lifecycle.record_status(
        run,
        seen=RunStatus.UNKNOWN,
        new=RunStatus.PENDING,
        source=EventSource.TRIGGER,
        extra_fields={"champ_run_id": 555},
    )
    return run


def path_of(run):
    return list(run.events.order_by("seq").values_list("from_status", "to_status"))


def test_opening_a_run_records_it_as_unknown_with_a_first_event(org_a, alice):
    run = lifecycle.open_run(organisation=org_a, workflow_id=7, input={"a": 1}, triggered_by=alice)
    assert run.status == RunStatus.UNKNOWN
    assert path_of(run) == [("", "unknown")]


def test_the_same_change_reported_twice_gives_one_event(run):
    first = lifecycle.record_status(run.pk, seen="pending", new="in_progress", source="poll")
    second = lifecycle.record_status(run.pk, seen="pending", new="in_progress", source="poll")
    assert first.recorded and not second.recorded
    assert RunEvent.objects.filter(run=run, to_status="in_progress").count() == 1


def test_poll_and_webhook_seeing_the_same_end_record_it_once(run):
    lifecycle.observe_status(run, new="completed", source="webhook", output={"ok": 1})
    lifecycle.record_status(run.pk, seen="pending", new="completed", source="poll")
    lifecycle.observe_status(run, new="completed", source="webhook", output={"ok": 1})
    assert RunEvent.objects.filter(run=run, to_status="completed").count() == 1
    run.refresh_from_db()
    assert run.output == {"ok": 1}
    assert run.finished_at is not None
    assert run.next_poll_at is None


def test_a_stale_in_progress_after_completed_is_ignored(run):
    lifecycle.record_status(run.pk, seen="pending", new="completed", source="poll", output=1)
    stale = lifecycle.observe_status(run, new="in_progress", source="poll")
    late = lifecycle.record_status(run.pk, seen="completed", new="in_progress", source="poll")
    assert not stale.recorded and not late.recorded
    run.refresh_from_db()
    assert run.status == "completed"


def test_suspend_and_resume_give_events_in_order(run):
    for seen, new in [
        ("pending", "in_progress"),
        ("in_progress", "suspended"),
        ("suspended", "in_progress"),
        ("in_progress", "completed"),
    ]:
        assert lifecycle.record_status(run.pk, seen=seen, new=new, source="poll").recorded
    assert path_of(run) == [
        ("", "unknown"),
        ("unknown", "pending"),
        ("pending", "in_progress"),
        ("in_progress", "suspended"),
        ("suspended", "in_progress"),
        ("in_progress", "completed"),
    ]
    assert list(run.events.values_list("seq", flat=True)) == [1, 2, 3, 4, 5, 6]


def test_no_change_writes_no_event(run):
    before = run.events.count()
    assert not lifecycle.record_status(
        run.pk, seen="pending", new="pending", source="poll"
    ).recorded
    assert not lifecycle.observe_status(run, new="pending", source="poll").recorded
    assert run.events.count() == before


def test_the_extra_fields_are_written_with_the_change(run):
    run.refresh_from_db()
    assert run.champ_run_id == 555
    assert run.status == RunStatus.PENDING


def test_run_events_are_append_only(run):
    event = run.events.first()
    event.message = "edited"
    with pytest.raises(AppendOnlyError):
        event.save()
    with pytest.raises(AppendOnlyError):
        event.delete()
    with pytest.raises(AppendOnlyError):
        RunEvent.objects.filter(run=run).update(message="x")
    with pytest.raises(AppendOnlyError):
        RunEvent.objects.filter(run=run).delete()


def test_an_unknown_status_is_refused(run):
    with pytest.raises(ValueError):
        lifecycle.record_status(run.pk, seen="pending", new="exploded", source="poll")


def test_rejected_is_final(org_a, alice):
    run = lifecycle.open_run(organisation=org_a, workflow_id=7, input={}, triggered_by=alice)
    lifecycle.record_status(run, seen="unknown", new="rejected", source="trigger", error="401")
    assert not lifecycle.observe_status(run, new="pending", source="webhook").recorded
    assert Run.objects.get(pk=run.pk).status == "rejected"


# --- A poll batch's changes at once -------------------------------------------------


def _runs_in(status, org, user, count):
    runs = []
    for number in range(count):
        run = lifecycle.open_run(organisation=org, workflow_id=101, input={}, triggered_by=user)
        lifecycle.record_status(
            run,
            seen="unknown",
            new=status,
            source="trigger",
            extra_fields={"champ_run_id": 9000 + run.pk + number},
        )
        runs.append(run)
    return runs


def test_a_batch_records_only_the_changes_whose_runs_are_still_as_seen(org_a, alice):
    fresh, stale, finished = _runs_in("pending", org_a, alice, 3)
    lifecycle.record_status(stale, seen="pending", new="in_progress", source="webhook")
    lifecycle.record_status(finished, seen="pending", new="completed", source="webhook")
    at = fresh.status_changed_at
    events = lifecycle.record_changes(
        [
            lifecycle.StatusChange(
                run_id=run.pk,
                seen="pending",
                new="in_progress",
                source="poll",
                observed_at=at,
                seen_changed_at=run.status_changed_at,
            )
            for run in (fresh, stale, finished)
        ]
    )
    assert [event.run_id for event in events] == [fresh.pk]
    assert path_of(fresh)[-1] == ("pending", "in_progress")
    assert path_of(stale)[-1] == ("pending", "in_progress")  # the webhook's, not a second
    assert RunEvent.objects.filter(run=stale, to_status="in_progress").count() == 1
    assert Run.objects.get(pk=finished.pk).status == "completed"


def test_a_batch_writes_each_change_with_its_own_columns(
    org_a, alice, django_capture_on_commit_callbacks
):
    done, broken, running = _runs_in("in_progress", org_a, alice, 3)
    change = {"seen": "in_progress", "source": "poll", "observed_at": done.status_changed_at}
    with django_capture_on_commit_callbacks() as callbacks:
        events = lifecycle.record_changes(
            [
                lifecycle.StatusChange(run_id=done.pk, new="completed", output={"n": 1}, **change),
                lifecycle.StatusChange(
                    run_id=broken.pk, new="failed", error="boom \x00", **change
                ),
                lifecycle.StatusChange(
                    run_id=running.pk, new="suspended", snapshot={"s": "\ud800"}, **change
                ),
            ]
        )
    assert [(e.run_id, e.seq) for e in events] == [(done.pk, 3), (broken.pk, 3), (running.pk, 3)]
    assert all(e.pk for e in events)
    done, broken, running = (Run.objects.get(pk=r.pk) for r in (done, broken, running))
    assert (done.status, done.output, done.next_poll_at) == ("completed", {"n": 1}, None)
    assert done.finished_at == change["observed_at"]
    assert (broken.status, broken.error) == ("failed", "boom \ufffd")
    assert running.status == "suspended" and running.finished_at is None
    assert running.events.get(seq=3).snapshot == {"s": "\ufffd"}
    # Only the failure asks for a notification, once its change has committed.
    assert [callback.__name__ for callback in callbacks] == ["notify_run_failed"]


def test_a_run_changing_twice_in_one_batch_gets_consecutive_events(run):
    at = run.status_changed_at
    events = lifecycle.record_changes(
        [
            lifecycle.StatusChange(
                run_id=run.pk, seen="pending", new="in_progress", source="poll", observed_at=at
            ),
            lifecycle.StatusChange(
                run_id=run.pk, seen="in_progress", new="completed", source="poll", observed_at=at
            ),
        ]
    )
    assert [e.seq for e in events] == [3, 4]
    assert path_of(run)[-2:] == [("pending", "in_progress"), ("in_progress", "completed")]
