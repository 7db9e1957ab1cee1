"""
A new user's day in a real browser (Chromium), against a live server, the
Champ simulator and a real django-q2 cluster: log in, create an organisation,
add its API token and a viewer, save a preset, run it and watch it finish
live, filter the history, run it again with another input, export CSV; then
the viewer sees no Run button and is refused if they post anyway.

Nothing waits a fixed time: every step waits for a condition on the page
(Playwright's ``expect``), bounded by generous timeouts (tests/e2e/conftest.py).
"""

import csv
import io
import json
import re
from pathlib import Path

import pytest

from runs import simulator
from runs.history import EXPORT_COLUMNS
from runs.models import Membership, Run, WorkflowPreset
from tests.e2e.conftest import HELD_WORKFLOW, RUN_FINAL_TIMEOUT_MS, expect

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.django_db(transaction=True)]

ORG_NAME = "Acme Research"
PRESET = "Echo a customer"
FIRST_INPUT = {"customer_id": 42, "plan": "gold"}
EDITED_INPUT = {"customer_id": 43, "plan": "platinum"}


@pytest.fixture
def nadia(make_user):
    """The new user: an account, nothing else."""
    return make_user("nadia")


@pytest.fixture
def vera(make_user):
    """A colleague nadia will add as a viewer."""
    return make_user("vera")


def status_badge(page):
    """The run page's current status (inside the block htmx refreshes)."""
    return page.locator("#run-live .facts .badge").first


def run_id_from(page) -> int:
    match = re.search(r"/runs/(\d+)/$", page.url)
    assert match, page.url
    return int(match.group(1))


def watch_until_completed(page, champ) -> None:
    """On a run page showing an open run: release it and see it complete without a reload."""
    expect(status_badge(page)).to_have_text(re.compile(r"^(Pending|In progress)$"))
    expect(page.locator("#run-live")).to_contain_text("updates live")
    # A marker on the window survives htmx swaps, not a reload or navigation.
    page.evaluate("() => { window.e2eNotReloaded = true; }")
    url = page.url
    champ.release()
    expect(status_badge(page)).to_have_text("Completed", timeout=RUN_FINAL_TIMEOUT_MS)
    assert page.evaluate("() => window.e2eNotReloaded === true"), "the page was reloaded"
    assert page.url == url
    expect(page.locator("#run-live")).not_to_contain_text("updates live")
    expect(page.locator("#run-live")).not_to_have_attribute("hx-get", re.compile(".*"))
    expect(page.locator("#run-live .timeline li").last).to_contain_text("Completed")


def test_a_new_users_day(e2e, champ, cluster, nadia, vera):
    page = e2e.login(e2e.page("nadia"), "nadia")

    # -- An organisation pointing at the simulator, its token, a viewer ---------------
    expect(page.get_by_role("heading", name="Dashboard")).to_be_visible()
    page.get_by_role("link", name="Create an organisation").click()
    page.get_by_label("Name").fill(ORG_NAME)
    page.get_by_label("Champ API base URL").fill(champ.base_url)
    page.get_by_role("button", name="Save").click()
    expect(page.get_by_role("heading", name=ORG_NAME)).to_be_visible()
    expect(page.locator(".messages")).to_contain_text("Add an API token next")

    tokens = page.locator("#tokens")
    tokens.get_by_label("Label").fill("Simulator")
    tokens.get_by_label("Champ API token").fill(simulator.DEMO_TOKEN)
    tokens.get_by_role("button", name="Add token").click()
    expect(tokens.locator("tbody tr")).to_contain_text("Simulator")
    expect(tokens.locator("tbody tr")).to_have_count(1)
    expect(tokens.locator("tbody tr")).to_contain_text(simulator.DEMO_TOKEN[-4:])
    assert simulator.DEMO_TOKEN not in page.content()  # write-only: only a hint is shown

    members = page.locator("#members")
    members.get_by_label("Username", exact=True).fill("vera")
    members.get_by_label("Role", exact=True).select_option("viewer")
    members.get_by_role("button", name="Add member").click()
    expect(page.locator("#members tbody")).to_contain_text("vera")
    assert Membership.objects.filter(user=vera, role="viewer").exists()

    # -- A preset with JSON input (a typo first: the form says where) -------------------
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Presets").click()
    page.get_by_role("link", name="New preset").click()
    page.get_by_label("Name").fill(PRESET)
    # Pasting the workflow's dashboard URL works as well as typing its number.
    page.get_by_label("Workflow ID").fill(f"https://dash.champ.ai/app/workflows/{HELD_WORKFLOW}")
    page.get_by_label("Input (JSON)").fill('{"customer_id": 42, "plan": "gold",}')
    page.get_by_role("button", name="Save").click()
    expect(page.locator(".field-error")).to_contain_text("The input is not valid JSON")
    expect(page.get_by_label("Input (JSON)")).to_have_value('{"customer_id": 42, "plan": "gold",}')
    page.get_by_label("Input (JSON)").fill(json.dumps(FIRST_INPUT))
    page.get_by_role("button", name="Save").click()
    expect(page.get_by_role("heading", name=PRESET)).to_be_visible()
    preset = WorkflowPreset.objects.get(name=PRESET)
    assert (preset.workflow_id, preset.input) == (HELD_WORKFLOW, FIRST_INPUT)

    # -- Run: the status changes live, without reloading ---------------------------------
    page.get_by_role("button", name=f"Run {PRESET}").click()
    expect(page).to_have_url(re.compile(r"/runs/\d+/$"))
    expect(page.locator(".messages")).to_contain_text("Run started")
    first_run = run_id_from(page)
    watch_until_completed(page, champ)
    expect(page.locator("#run-live pre")).to_contain_text('"customer_id": 42')

    # -- A run Champ refuses, so the history has something to filter out -----------------
    page.get_by_role("navigation", name="Main").get_by_role("link", name="New run").click()
    page.get_by_label("Workflow ID").fill(str(simulator.WORKFLOW_UNPUBLISHED))
    page.get_by_role("button", name="Start run").click()
    expect(status_badge(page)).to_have_text("Rejected")
    refused_run = run_id_from(page)

    # -- The history, filtered by status; open the run from it ----------------------------
    page.get_by_role("navigation", name="Main").get_by_role("link", name="History").click()
    results = page.locator("#history-results tbody tr")
    expect(results).to_have_count(2)
    page.get_by_role("checkbox", name="Completed").check()
    page.get_by_role("button", name="Filter").click()
    expect(page).to_have_url(re.compile(r"[?&]status=completed"))
    expect(results).to_have_count(1)
    expect(results.get_by_role("link", name=f"#{first_run}", exact=True)).to_be_visible()
    expect(results.get_by_role("link", name=f"#{refused_run}", exact=True)).to_have_count(0)
    results.get_by_role("link", name=f"#{first_run}", exact=True).click()
    expect(page.get_by_role("heading", name=re.compile(rf"^Run #{first_run} "))).to_be_visible()

    # -- Run again with edited input ---------------------------------------------------------
    page.get_by_role("link", name="Run again").click()
    expect(
        page.get_by_role("heading", name=f"Run again: run #{first_run}", exact=True)
    ).to_be_visible()
    expect(page.get_by_label("Input (JSON)")).to_have_value(re.compile(r'"customer_id": 42'))
    page.get_by_label("Input (JSON)").fill(json.dumps(EDITED_INPUT))
    page.get_by_role("button", name="Start run").click()
    expect(page).to_have_url(re.compile(r"/runs/\d+/$"))
    second_run = run_id_from(page)
    assert second_run != first_run
    expect(page.get_by_role("link", name=f"run #{first_run}", exact=True)).to_be_visible()
    watch_until_completed(page, champ)
    expect(page.locator("#run-live pre")).to_contain_text('"customer_id": 43')

    # -- Export the filtered history as CSV --------------------------------------------------
    page.get_by_role("navigation", name="Main").get_by_role("link", name="History").click()
    page.get_by_role("checkbox", name="Completed").check()
    page.get_by_role("button", name="Filter").click()
    expect(page).to_have_url(re.compile(r"[?&]status=completed"))
    expect(results).to_have_count(2)  # the refused run is filtered out
    with page.expect_download() as download_info:
        page.get_by_role("link", name="Export CSV").click()
    download = download_info.value
    assert download.suggested_filename.endswith(".csv")
    text = Path(download.path()).read_text(encoding="utf-8")
    rows = list(csv.DictReader(io.StringIO(text)))
    assert list(rows[0]) == EXPORT_COLUMNS
    assert sorted(int(row["id"]) for row in rows) == sorted([first_run, second_run])
    assert {row["status"] for row in rows} == {"completed"}
    assert {row["organisation"] for row in rows} == {ORG_NAME}
    inputs = {int(row["id"]): json.loads(row["input"]) for row in rows}
    assert inputs == {first_run: FIRST_INPUT, second_run: EDITED_INPUT}
    assert simulator.DEMO_TOKEN not in text

    # A text filter on top of the status: only the run with the edited input.
    page.get_by_label("Text", exact=True).fill("platinum")
    page.get_by_role("button", name="Filter").click()
    expect(page).to_have_url(re.compile(r"[?&]q=platinum"))
    expect(results).to_have_count(1)
    expect(results.get_by_role("link", name=f"#{second_run}", exact=True)).to_be_visible()

    # -- The viewer: no Run button anywhere, and a forged POST is refused -------------------
    viewer = e2e.login(e2e.page("vera"), "vera")
    tile = viewer.locator(".preset-tile", has_text=PRESET)
    expect(tile).to_be_visible()
    expect(viewer.get_by_role("button", name=re.compile(r"^Run\b"))).to_have_count(0)
    viewer.goto(f"/presets/{preset.pk}/")
    expect(viewer.get_by_role("heading", name=PRESET)).to_be_visible()
    expect(viewer.get_by_role("button", name=re.compile(r"^Run\b"))).to_have_count(0)
    expect(viewer.get_by_role("link", name="Run with different input")).to_have_count(0)
    expect(viewer.get_by_role("link", name="Edit", exact=True)).to_have_count(0)
    viewer.goto(f"/runs/{first_run}/")
    expect(status_badge(viewer)).to_have_text("Completed")
    expect(viewer.get_by_role("link", name="Run again")).to_have_count(0)

    runs_before = Run.objects.count()
    csrf = next(c["value"] for c in viewer.context.cookies() if c["name"] == "csrftoken")
    forged = viewer.request.post(
        f"{e2e.base_url}/presets/{preset.pk}/run/",
        form={"csrfmiddlewaretoken": csrf, "submission_key": "e2e-viewer-forged-0001"},
        max_redirects=0,
    )
    assert forged.status == 403, (forged.status, forged.text()[:500])
    assert Run.objects.count() == runs_before

    # Every page both users saw obeyed the Content-Security-Policy.
    e2e.assert_clean_console()


def test_the_console_watch_sees_a_csp_violation(e2e):
    # The "no CSP violation" checks are only worth something if a violation
    # is seen: inject an inline <style>, which the policy must refuse.
    page = e2e.page("canary")
    page.goto("/accounts/login/")
    with page.expect_console_message(lambda m: "Content Security Policy" in m.text):
        page.evaluate(
            "() => { const s = document.createElement('style');"
            " s.textContent = 'body { color: red }'; document.head.appendChild(s); }"
        )
    assert e2e.csp_violations()
    e2e.console.clear()  # expected here; the fixture checks the rest
