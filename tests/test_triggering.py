"""Starting runs against the simulator over real HTTP: every outcome, stored and shown."""

import html

import pytest
from django.core.exceptions import PermissionDenied
from django.urls import reverse

from runs import organisations as org_actions
from runs import triggering
from runs.models import ApiToken, AuditAction, AuditEntry, Run, RunEvent, RunStatus
from runs.simulator import (
    DEMO_TOKEN,
    FIRST_RUN_ID,
    WORKFLOW_ECHO,
    WORKFLOW_TICKETING,
    WORKFLOW_UNPUBLISHED,
)
from runs.triggering import NoActiveToken, TriggerRefused, run_trigger
from tests.run_fixtures import *  # noqa: F403

KEY = "k" * 22


def start(client, organisation, workflow_id=WORKFLOW_ECHO, input="{}", **extra):
    """POST the new-run form and follow to wherever it leads."""
    data = {"organisation": organisation.pk, "workflow_id": workflow_id, "input": input}
    data.update(extra)
    return client.post(reverse("run_create"), data, follow=True)


def page(response) -> str:
    return html.unescape(response.content.decode())


def transitions(run):
    return list(run.events.order_by("seq").values_list("from_status", "to_status", "source"))


def test_accepted_run_is_pending_with_its_champ_id_and_kicks_the_poller(
    client_for,
    olivia,
    champ_org,
    champ_server,
    demo_token,
    kicks,
    django_capture_on_commit_callbacks,
):
    with django_capture_on_commit_callbacks(execute=True):
        response = start(client_for(olivia), champ_org, input='{"message": "hi"}')

    run = Run.objects.get()
    assert response.redirect_chain[-1][0] == run.get_absolute_url()
    assert run.status == RunStatus.PENDING
    assert run.champ_run_id == FIRST_RUN_ID
    assert run.champ_url.startswith(champ_server.base_url)
    assert run.next_poll_at is not None
    assert run.input == {"message": "hi"}
    assert (run.token, run.triggered_by, run.preset, run.error) == (demo_token, olivia, None, "")
    assert transitions(run) == [("", "unknown", "trigger"), ("unknown", "pending", "trigger")]
    assert run.events.get(seq=2).snapshot["id"] == FIRST_RUN_ID
    assert f"Champ accepted workflow {WORKFLOW_ECHO} as run {FIRST_RUN_ID} (pending)" in page(
        response
    )
    assert kicks == [1]
    demo_token.refresh_from_db()
    assert demo_token.last_used_at is not None
    assert champ_server.sim.stats()["posts"] == 1
    assert champ_server.sim.runs[FIRST_RUN_ID].input == {"message": "hi"}
    entry = AuditEntry.objects.get(action=AuditAction.RUN_TRIGGERED)
    assert entry.changes["token"] == demo_token.hint
    assert entry.changes["workflow_id"] == WORKFLOW_ECHO
    assert DEMO_TOKEN not in str(entry.changes)


def test_run_is_committed_as_unknown_before_champ_is_asked(olivia, champ_org, monkeypatch):
    seen = []

    def spy(**kwargs):
        run = Run.objects.get()
        seen.append((run.status, transitions(run)))
        raise triggering.champ.ChampOutcomeUnknown("lost")

    monkeypatch.setattr(triggering.champ, "trigger", spy)
    run_trigger(organisation=champ_org, workflow_id=WORKFLOW_ECHO, input={}, user=olivia)
    assert seen == [("unknown", [("", "unknown", "trigger")])]


def test_token_champ_rejects_is_flagged_and_the_run_rejected(
    client_for, olivia, alice, org_a, champ_server, kicks, django_capture_on_commit_callbacks
):
    org_a.api_base_url = champ_server.base_url
    org_a.save()
    token = org_actions.token_add(
        organisation=org_a, label="Old", secret="api_not_known_here_wxyz", user=alice
    )

    with django_capture_on_commit_callbacks(execute=True):
        response = start(client_for(olivia), org_a)

    run = Run.objects.get()
    assert run.status == RunStatus.REJECTED
    assert run.finished_at is not None
    assert "Invalid API token" in run.error
    assert transitions(run) == [("", "unknown", "trigger"), ("unknown", "rejected", "trigger")]
    assert run.events.get(seq=2).snapshot["status_code"] == 401
    assert "Champ rejected the token “Old” (api_…wxyz) — re-enter it" in page(response)
    token.refresh_from_db()
    assert token.rejected_at is not None
    assert AuditEntry.objects.filter(action=AuditAction.TOKEN_REJECTED).exists()
    assert kicks == []


@pytest.mark.parametrize(
    "workflow_id, shown, champ_said",
    [
        (WORKFLOW_UNPUBLISHED, "workflow 106 not found or not published", "Workflow not found"),
        (999, "workflow 999 not found or not published", "Workflow not found"),
        (
            WORKFLOW_TICKETING,
            "workflow 107 cannot be started through the API (e.g. ticketing workflows)",
            "triggered by ticket events",
        ),
    ],
)
def test_workflow_champ_refuses_is_rejected_with_champs_reason(
    client_for, olivia, champ_org, champ_server, workflow_id, shown, champ_said
):
    response = start(client_for(olivia), champ_org, workflow_id=workflow_id)

    run = Run.objects.get()
    assert response.redirect_chain[-1][0] == run.get_absolute_url()
    assert run.status == RunStatus.REJECTED
    assert run.champ_run_id is None
    assert champ_said in run.error
    assert transitions(run)[-1] == ("unknown", "rejected", "trigger")
    assert shown in page(response)
    assert champ_server.sim.stats()["runs_created"] == 0


def test_unreachable_champ_rejects_the_run_saying_it_was_not_received(
    client_for, olivia, champ_org, closed_port_url
):
    champ_org.api_base_url = closed_port_url
    champ_org.save()

    response = start(client_for(olivia), champ_org)

    run = Run.objects.get()
    assert run.status == RunStatus.REJECTED
    assert "could not be reached" in run.error
    assert "Connect" in run.error  # the reason
    assert run.events.get(seq=2).snapshot["type"] == "ChampUnavailable"
    assert f"Champ could not be reached at {closed_port_url}" in page(response)
    assert "did not receive the request" in page(response)


def test_hanging_post_leaves_one_unknown_run_and_is_not_retried(
    client_for, olivia, champ_org, champ_server, kicks, django_capture_on_commit_callbacks
):
    champ_server.sim.configure(hang_post=True)

    with django_capture_on_commit_callbacks(execute=True):
        response = start(client_for(olivia), champ_org)

    run = Run.objects.get()
    assert run.status == RunStatus.UNKNOWN
    assert run.champ_run_id is None
    assert run.next_poll_at is None
    assert transitions(run) == [("", "unknown", "trigger")]
    assert "may or may not" in run.error
    assert triggering.dashboard_url(WORKFLOW_ECHO) in run.error
    stats = champ_server.sim.stats()
    assert (stats["requests"], stats["posts"]) == (1, 1)  # sent once, created once, not retried
    text = page(response)
    assert f"Champ may or may not have started workflow {WORKFLOW_ECHO}" in text
    assert "will not be retried automatically" in text
    assert kicks == []


@pytest.mark.parametrize(
    "knobs, status, shown",
    [
        # 500 to a POST: Champ may have created the run before failing.
        ({"fail_rate": 1.0}, RunStatus.UNKNOWN, "may or may not have started"),
        # 503 (second of the simulator's alternating 500/503) and 429: not taken.
        ({"rate_limit_rate": 1.0}, RunStatus.REJECTED, "Champ answered HTTP 429"),
    ],
)
def test_server_errors_to_the_trigger(
    client_for, olivia, champ_org, champ_server, knobs, status, shown
):
    champ_server.sim.configure(fault_methods={"POST"}, **knobs)

    response = start(client_for(olivia), champ_org)

    run = Run.objects.get()
    assert run.status == status
    assert shown in page(response)
    assert champ_server.sim.stats()["requests"] == 1


def test_503_to_the_trigger_is_rejected(client_for, olivia, champ_org, champ_server):
    champ_server.sim.configure(fault_methods={"POST"}, fail_rate=1.0)
    client = client_for(olivia)
    start(client, champ_org)  # the simulator alternates 500 and 503: this one gets the 500

    # The first may have started at Champ: the duplicate guard asks, the user confirms.
    response = start(client, champ_org, confirm_duplicate="1")

    first, run = Run.objects.order_by("pk")
    assert first.status == RunStatus.UNKNOWN
    assert run.status == RunStatus.REJECTED
    assert "Champ answered HTTP 503" in page(response)
    assert "Service unavailable" in run.error


def test_no_active_token_keeps_the_form_links_the_tokens_page_and_sends_nothing(
    client_for, olivia, org_a, champ_server
):
    org_a.api_base_url = champ_server.base_url
    org_a.save()

    response = start(client_for(olivia), org_a, input='{"keep": "me"}')

    assert response.status_code == 200
    text = page(response)
    assert "Org-A has no active Champ API token, so nothing was sent" in text
    assert f'href="/orgs/{org_a.slug}/#tokens"' in text
    assert "&quot;keep&quot;" in response.content.decode()  # the input is still in the form
    assert not Run.objects.exists()
    assert champ_server.sim.stats()["requests"] == 0


def test_preset_button_without_token_goes_to_the_tokens_page(client_for, olivia, preset_a):
    response = client_for(olivia).post(reverse("preset_run", args=[preset_a.pk]))
    assert response.status_code == 302
    assert response["Location"] == f"/orgs/{preset_a.organisation.slug}/#tokens"
    assert not Run.objects.exists()


def test_undecryptable_token_rejects_the_run_saying_it_needs_re_entry(
    client_for, olivia, champ_org, champ_server, demo_token
):
    ApiToken.objects.filter(pk=demo_token.pk).update(ciphertext="not-a-ciphertext")

    response = start(client_for(olivia), champ_org)

    run = Run.objects.get()
    assert run.status == RunStatus.REJECTED
    assert "the token needs re-entry" in run.error
    assert "the token needs re-entry" in page(response)
    assert champ_server.sim.stats()["requests"] == 0


def test_double_post_of_one_form_starts_one_run_and_one_champ_request(
    client_for, olivia, champ_org, champ_server
):
    client = client_for(olivia)
    first = start(client, champ_org, submission_key=KEY)
    second = start(client, champ_org, submission_key=KEY)

    run = Run.objects.get()
    assert run.submission_key == KEY
    assert first.redirect_chain[-1][0] == second.redirect_chain[-1][0] == run.get_absolute_url()
    assert "This form was already submitted" in page(second)
    stats = champ_server.sim.stats()
    assert (stats["requests"], stats["posts"]) == (1, 1)
    assert AuditEntry.objects.filter(action=AuditAction.RUN_TRIGGERED).count() == 1


def test_double_click_on_a_preset_button_starts_one_run(
    client_for, olivia, champ_org, champ_server, preset_a
):
    client = client_for(olivia)
    url = reverse("preset_run", args=[preset_a.pk])
    responses = [client.post(url, {"submission_key": KEY}) for _ in range(2)]

    run = Run.objects.get()
    assert [r["Location"] for r in responses] == [run.get_absolute_url()] * 2
    assert champ_server.sim.stats()["requests"] == 1


def test_concurrent_double_submission_finds_the_other_run(
    olivia, champ_org, champ_server, monkeypatch
):
    first = run_trigger(
        organisation=champ_org,
        workflow_id=WORKFLOW_ECHO,
        input={},
        user=olivia,
        submission_key=KEY,
    )
    # The second request looked before the first stored its run: the insert then
    # hits the unique constraint, and the run found after that is returned.
    real = triggering._run_for_submission
    looks = iter([None])
    monkeypatch.setattr(
        triggering, "_run_for_submission", lambda key, user: next(looks, None) or real(key, user)
    )

    second = run_trigger(
        organisation=champ_org,
        workflow_id=WORKFLOW_ECHO,
        input={},
        user=olivia,
        submission_key=KEY,
    )

    assert second.duplicate and second.run == first.run
    assert Run.objects.count() == 1
    assert champ_server.sim.stats()["requests"] == 1


def test_someone_elses_submission_key_starts_nothing_and_reveals_nothing(
    olivia, alice, champ_org, champ_server
):
    run_trigger(
        organisation=champ_org,
        workflow_id=WORKFLOW_ECHO,
        input={},
        user=olivia,
        submission_key=KEY,
    )
    with pytest.raises(TriggerRefused):
        run_trigger(
            organisation=champ_org,
            workflow_id=WORKFLOW_ECHO,
            input={},
            user=alice,
            submission_key=KEY,
        )
    assert Run.objects.count() == 1


def test_one_click_preset_run_records_the_preset_and_its_input(
    client_for, olivia, champ_org, champ_server, preset_a
):
    response = client_for(olivia).post(
        reverse("preset_run", args=[preset_a.pk]), {"submission_key": KEY}, follow=True
    )

    run = Run.objects.get()
    assert response.redirect_chain == [(run.get_absolute_url(), 302)]
    assert (run.preset, run.preset_input, run.input) == (
        preset_a,
        {"message": "hello"},
        {"message": "hello"},
    )
    assert run.status == RunStatus.PENDING
    assert "Run started" in page(response)
    entry = AuditEntry.objects.get(action=AuditAction.RUN_TRIGGERED)
    assert entry.changes["preset"] == "Echo hello"
    preset_a.input = {"message": "changed later"}
    preset_a.save()
    run.refresh_from_db()
    assert run.preset_input == {"message": "hello"}  # a snapshot, not a reference


def test_run_with_different_input_keeps_the_preset_and_its_input_snapshot(
    client_for, olivia, champ_org, champ_server, preset_a
):
    client = client_for(olivia)
    form_page = client.get(reverse("run_create") + f"?preset={preset_a.pk}")
    assert form_page.context["form"].initial["input"] == {"message": "hello"}

    client.post(
        reverse("run_create") + f"?preset={preset_a.pk}",
        {
            "organisation": champ_org.pk,
            "workflow_id": WORKFLOW_ECHO,
            "input": '{"message": "bye"}',
        },
    )

    run = Run.objects.get()
    assert (run.preset, run.preset_input, run.input) == (
        preset_a,
        {"message": "hello"},
        {"message": "bye"},
    )


def test_run_again_records_rerun_of_and_audits_it(client_for, olivia, champ_org, champ_server):
    client = client_for(olivia)
    start(client, champ_org, input='{"n": 1}')
    original = Run.objects.get()

    form_page = client.get(reverse("run_again", args=[original.pk]))
    initial = form_page.context["form"].initial
    assert (initial["organisation"], initial["workflow_id"], initial["input"]) == (
        champ_org.pk,
        WORKFLOW_ECHO,
        {"n": 1},
    )
    response = client.post(
        reverse("run_again", args=[original.pk]),
        {"organisation": champ_org.pk, "workflow_id": WORKFLOW_ECHO, "input": '{"n": 2}'},
        follow=True,
    )

    rerun = Run.objects.exclude(pk=original.pk).get()
    assert response.redirect_chain[-1][0] == rerun.get_absolute_url()
    assert (rerun.rerun_of, rerun.input, rerun.status) == (original, {"n": 2}, RunStatus.PENDING)
    assert AuditEntry.objects.filter(
        action=AuditAction.RUN_AGAIN, target_id=str(rerun.pk)
    ).exists()
    assert champ_server.sim.stats()["posts"] == 2


def test_chosen_token_is_used_and_the_default_is_the_newest(
    client_for, olivia, alice, champ_org, demo_token, champ_server
):
    newer = org_actions.token_add(
        organisation=champ_org, label="Newer", secret="api_newer_but_unknown_1", user=alice
    )
    client = client_for(olivia)
    assert client.get(reverse("run_create")).context["form"].show_token

    start(client, champ_org, token=demo_token.pk)
    start(client, champ_org, confirm_duplicate="1")  # the same input again, on purpose

    chosen, default = Run.objects.order_by("pk")
    assert (chosen.token, chosen.status) == (demo_token, RunStatus.PENDING)
    assert (default.token, default.status) == (newer, RunStatus.REJECTED)


def test_token_of_another_organisation_is_a_form_error_and_nothing_is_sent(
    client_for, olivia, alice, champ_org, champ_server, token_b
):
    org_actions.token_add(organisation=champ_org, label="Second", secret=DEMO_TOKEN, user=alice)

    response = start(client_for(olivia), champ_org, token=token_b.pk)

    assert response.status_code == 200
    assert response.context["form"].errors["token"]
    assert not Run.objects.exists()
    assert champ_server.sim.stats()["requests"] == 0


def test_viewer_cannot_start_runs(client_for, victor, champ_org, champ_server, preset_a):
    client = client_for(victor)
    assert client.post(reverse("preset_run", args=[preset_a.pk])).status_code == 403
    response = start(client, champ_org)
    assert response.context["form"].errors["organisation"]
    with pytest.raises(PermissionDenied):
        run_trigger(organisation=champ_org, workflow_id=WORKFLOW_ECHO, input={}, user=victor)
    assert not Run.objects.exists()
    assert champ_server.sim.stats()["requests"] == 0


def test_operator_of_another_org_cannot_run_its_preset_by_id(
    client_for, olivia, champ_org, champ_server, preset_b, org_b
):
    client = client_for(olivia)
    assert client.post(reverse("preset_run", args=[preset_b.pk])).status_code == 404
    assert client.get(reverse("run_create") + f"?preset={preset_b.pk}").status_code == 404
    response = start(client, org_b)
    assert response.context["form"].errors["organisation"]
    assert not Run.objects.exists()


def test_archived_preset_is_not_run(client_for, olivia, champ_org, champ_server, preset_a):
    preset_a.archived = True
    preset_a.save()

    response = client_for(olivia).post(reverse("preset_run", args=[preset_a.pk]), follow=True)

    assert "is archived" in page(response)
    assert not Run.objects.exists()
    assert champ_server.sim.stats()["requests"] == 0


def test_no_token_error_is_typed_and_carries_the_tokens_link(olivia, org_a):
    with pytest.raises(NoActiveToken) as caught:
        run_trigger(organisation=org_a, workflow_id=WORKFLOW_ECHO, input={}, user=olivia)
    assert caught.value.tokens_url == f"/orgs/{org_a.slug}/#tokens"
    assert not RunEvent.objects.exists()
