"""Django admin as the audit console: read-only records, masked tokens, cheap big lists."""

import pytest
from django import forms
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from runs.admin import AtLeast, CappedCountPaginator
from runs.models import (
    ApiToken,
    AuditAction,
    AuditEntry,
    Membership,
    Role,
    Run,
    RunEvent,
    RunStatus,
    WorkflowPreset,
)
from tests.conftest import KNOWN_TOKEN
from tests.test_history import T0, make_run


@pytest.fixture
def root(make_user):
    return make_user("root", is_staff=True, is_superuser=True)


@pytest.fixture
def admin_client(client_for, root):
    return client_for(root)


@pytest.fixture
def records(org_a, alice, root):
    run = make_run(org_a, triggered_by=alice, status=RunStatus.COMPLETED, at=T0)
    event = run.events.order_by("seq").last()
    entry = AuditEntry.objects.record(action=AuditAction.LOGIN, actor=alice, ip="10.0.0.1")
    return {"run": run, "runevent": event, "auditentry": entry}


def admin_url(model: str, view: str, *args) -> str:
    return reverse(f"admin:runs_{model}_{view}", args=args)


def form_data(client, url: str) -> dict:
    """What the admin change form at ``url`` would post back unchanged (inlines included)."""
    context = client.get(url).context
    forms_ = [context["adminform"].form]
    for inline in context["inline_admin_formsets"]:
        forms_ += [inline.formset.management_form, *inline.formset.forms]
    data = {}
    for form in forms_:
        for name, field in form.fields.items():
            value = form[name].value()
            if isinstance(field.widget, forms.CheckboxInput):
                if value:
                    data[form.add_prefix(name)] = "on"
            elif value is not None:  # value() is already prepared for the widget
                data[form.add_prefix(name)] = getattr(value, "pk", value)
    return data


@pytest.mark.parametrize("model", ["runevent", "auditentry", "run"])
def test_records_cannot_be_changed_deleted_or_added_even_by_a_superuser(
    admin_client, records, model
):
    obj = records[model]
    before = (RunEvent.objects.count(), AuditEntry.objects.count(), Run.objects.count())

    # Viewing is fine...
    assert admin_client.get(admin_url(model, "change", obj.pk)).status_code == 200
    # ...writing is not.
    assert admin_client.post(admin_url(model, "change", obj.pk), {}).status_code == 403
    assert admin_client.get(admin_url(model, "delete", obj.pk)).status_code == 403
    assert (
        admin_client.post(admin_url(model, "delete", obj.pk), {"post": "yes"}).status_code == 403
    )
    assert admin_client.get(admin_url(model, "add")).status_code == 403
    assert admin_client.post(admin_url(model, "add"), {}).status_code == 403
    # The bulk delete action is not offered either.
    response = admin_client.post(
        admin_url(model, "changelist"),
        {"action": "delete_selected", "_selected_action": [obj.pk], "post": "yes"},
    )
    assert response.status_code in (200, 302)
    after = (RunEvent.objects.count(), AuditEntry.objects.count(), Run.objects.count())
    assert after == before


def test_change_page_of_a_record_has_no_save_button(admin_client, records):
    html = admin_client.get(admin_url("auditentry", "change", records["auditentry"].pk))
    assert 'name="_save"' not in html.content.decode()


def test_token_secret_is_never_in_admin_html(admin_client, token_a):
    token = ApiToken.objects.get(pk=token_a.pk)
    pages = [
        admin_url("apitoken", "changelist"),
        admin_url("apitoken", "change", token.pk),
        admin_url("organisation", "change", token.organisation_id),
        admin_url("auditentry", "changelist"),
    ]
    for url in pages:
        response = admin_client.get(url)
        assert response.status_code == 200, url
        html = response.content.decode()
        assert KNOWN_TOKEN not in html, url
        assert token.ciphertext not in html, url
    assert token.hint in admin_client.get(pages[0]).content.decode()


def test_tokens_are_not_edited_in_admin(admin_client, token_a):
    response = admin_client.post(
        admin_url("apitoken", "change", token_a.pk), {"label": "renamed", "revoked_at": ""}
    )
    assert response.status_code == 403
    assert admin_client.get(admin_url("apitoken", "add")).status_code == 403


def test_run_list_filters_search_and_date_drill_down(admin_client, org_a, olivia, alice):
    by_olivia = make_run(org_a, triggered_by=olivia, workflow_id=31, at=T0)
    other = make_run(org_a, triggered_by=alice, status=RunStatus.FAILED, at=T0)
    Run.objects.filter(pk=by_olivia.pk).update(champ_run_id=987654)
    WorkflowPreset.objects.create(organisation=org_a, name="p", workflow_id=31)
    url = admin_url("run", "changelist")

    def listed(**params):
        response = admin_client.get(url, params)
        assert response.status_code == 200, params
        return {run.pk for run in response.context["cl"].result_list}

    assert listed() == {by_olivia.pk, other.pk}
    assert listed(status__exact="failed") == {other.pk}
    assert listed(organisation__id__exact=org_a.pk) == {by_olivia.pk, other.pk}
    assert listed(workflow_id="31") == {by_olivia.pk}
    assert listed(triggered_by__id__exact=olivia.pk) == {by_olivia.pk}
    assert listed(q="987654") == {by_olivia.pk}
    assert listed(q="31") == {by_olivia.pk}
    assert listed(q="not-a-number") == set()
    assert listed(q="99999999999999999999999") == set()
    assert listed(triggered_at__year="2026", triggered_at__month="3") == {by_olivia.pk, other.pk}
    assert listed(triggered_at__year="2025") == set()
    html = admin_client.get(url).content.decode()
    # The drill-down offers the one day there is (from the first and last run).
    assert "triggered_at__day=10&amp;triggered_at__month=3&amp;triggered_at__year=2026" in html


def test_run_change_page_shows_its_events_read_only(admin_client, records):
    run = records["run"]
    response = admin_client.get(admin_url("run", "change", run.pk))
    html = response.content.decode()
    assert "Run events" in html or "run events" in html
    assert 'name="events-0-seq"' not in html  # shown, not editable


def test_big_lists_never_count_the_whole_table(admin_client, org_a, monkeypatch):
    monkeypatch.setattr(CappedCountPaginator, "cap", 3)
    for n in range(5):
        make_run(org_a, at=T0)
    for model in ("run", "runevent", "auditentry"):
        with CaptureQueriesContext(connection) as queries:
            response = admin_client.get(admin_url(model, "changelist"))
        assert response.status_code == 200
        counts = [q["sql"] for q in queries if "COUNT(" in q["sql"].upper()]
        assert all("LIMIT" in sql.upper() for sql in counts), counts
    response = admin_client.get(admin_url("run", "changelist"))
    assert "3+ runs" in response.content.decode()
    assert "DISTINCT" not in " ".join(q["sql"].upper() for q in queries if "runs_run" in q["sql"])


def test_at_least_reads_as_a_lower_bound():
    assert str(AtLeast(10_001)) == "10,000+"
    assert AtLeast(10_001) > 1


def test_django_q_task_pages_stay_available(admin_client):
    for url in ["/admin/", "/admin/django_q/", "/admin/django_q/schedule/"]:
        assert admin_client.get(url).status_code == 200, url


def test_admin_edits_of_members_and_presets_are_audited(admin_client, org_a, root):
    membership = Membership.objects.get(user__username="victor")
    response = admin_client.post(
        admin_url("membership", "change", membership.pk),
        {"user": membership.user_id, "organisation": org_a.pk, "role": Role.OPERATOR},
    )
    assert response.status_code == 302
    entry = AuditEntry.objects.get(action=AuditAction.MEMBER_ROLE_CHANGED)
    assert entry.actor == root
    assert entry.changes["role"] == ["viewer", "operator"]
    assert entry.changes["via"] == "admin"

    preset = WorkflowPreset.objects.create(organisation=org_a, name="Old", workflow_id=4)
    url = admin_url("workflowpreset", "change", preset.pk)
    response = admin_client.post(url, {**form_data(admin_client, url), "archived": "on"})
    assert response.status_code == 302, response.context["errors"]
    assert AuditEntry.objects.filter(action=AuditAction.PRESET_ARCHIVED).count() == 1

    response = admin_client.post(admin_url("membership", "delete", membership.pk), {"post": "yes"})
    assert response.status_code == 302
    assert AuditEntry.objects.filter(action=AuditAction.MEMBER_REMOVED).count() == 1


@pytest.mark.parametrize(
    "text, message",
    [
        ('{"note": "a\\u0000b"}', "NUL character"),
        ("[1, 2]", "must be a JSON object"),
        ('{"blob": "' + "x" * 70_000 + '"}', "the limit is 64 KB"),
    ],
)
def test_admin_preset_input_obeys_the_portals_rules(admin_client, org_a, text, message):
    preset = WorkflowPreset.objects.create(organisation=org_a, name="Kept", workflow_id=4)
    url = admin_url("workflowpreset", "change", preset.pk)
    response = admin_client.post(url, {**form_data(admin_client, url), "input": text})
    assert response.status_code == 200  # the form again, with the reason
    assert message in str(response.context["adminform"].form.errors["input"])
    preset.refresh_from_db()
    assert preset.input == {} and preset.version == 1


def test_admin_membership_inline_changes_are_audited(admin_client, org_a, alice, make_user):
    carol = make_user("carol")
    memberships = list(Membership.objects.filter(organisation=org_a).order_by("pk"))
    data = {
        "name": org_a.name,
        "slug": org_a.slug,
        "api_base_url": org_a.api_base_url,
        "memberships-TOTAL_FORMS": len(memberships) + 1,
        "memberships-INITIAL_FORMS": len(memberships),
        "memberships-MIN_NUM_FORMS": 0,
        "memberships-MAX_NUM_FORMS": 1000,
    }
    for n, membership in enumerate(memberships):
        data.update(
            {
                f"memberships-{n}-id": membership.pk,
                f"memberships-{n}-organisation": org_a.pk,
                f"memberships-{n}-user": membership.user_id,
                f"memberships-{n}-role": membership.role,
            }
        )
    victor = next(n for n, m in enumerate(memberships) if m.user.username == "victor")
    data[f"memberships-{victor}-DELETE"] = "on"
    new = len(memberships)
    data.update(
        {
            f"memberships-{new}-organisation": org_a.pk,
            f"memberships-{new}-user": carol.pk,
            f"memberships-{new}-role": Role.VIEWER,
        }
    )
    response = admin_client.post(admin_url("organisation", "change", org_a.pk), data)
    assert response.status_code == 302, response.context and response.context["errors"]
    entries = AuditEntry.objects.exclude(action=AuditAction.LOGIN).order_by("id")
    assert [e.action for e in entries] == [AuditAction.MEMBER_REMOVED, AuditAction.MEMBER_ADDED]


def test_organisations_and_presets_are_not_deleted_from_admin(admin_client, org_a):
    preset = WorkflowPreset.objects.create(organisation=org_a, name="Keep", workflow_id=4)
    assert admin_client.get(admin_url("organisation", "delete", org_a.pk)).status_code == 403
    assert admin_client.get(admin_url("workflowpreset", "delete", preset.pk)).status_code == 403
