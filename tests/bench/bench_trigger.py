"""
Trigger overhead: the one-click Run round trip through the portal (view →
run_trigger → Champ POST → records → redirect) next to the simulator's own
POST measured alone, in the same run, against the same simulator process.
"""

import statistics
import time

from tests.bench.common import SimulatorProcess, percentile


def run(count: int = 200) -> dict:
    from django.contrib.auth import get_user_model
    from django.test import Client
    from django.urls import reverse

    from runs import champ, simulator
    from runs import organisations as org_actions
    from runs.forms import new_submission_key
    from runs.models import Run, WorkflowPreset

    with SimulatorProcess("--time-scale", "1000") as sim:
        user, _ = get_user_model().objects.get_or_create(
            username="bench-trigger", defaults={"is_superuser": True, "is_staff": True}
        )
        organisation = org_actions.organisation_create(
            name="bench-trigger", slug="bench-trigger", api_base_url=sim.base_url, user=user
        )
        org_actions.token_add(
            organisation=organisation, label="bench", secret=simulator.DEMO_TOKEN, user=user
        )
        # Distinct inputs: the duplicate-run guard must not turn a click into a question.
        presets = WorkflowPreset.objects.bulk_create(
            WorkflowPreset(
                organisation=organisation,
                name=f"bench {i}",
                workflow_id=simulator.WORKFLOW_SLOW,
                input={"i": i},
                created_by=user,
            )
            for i in range(count)
        )
        client = Client()
        client.force_login(user)

        # Alone: the same POST the portal sends, with a fresh connection each
        # time as run_trigger does (a stale keep-alive socket must never turn
        # into an "unknown" run). Alternated with the clicks, so a noisy
        # moment weighs on both alike.
        alone, portal = [], []
        for i, preset in enumerate(presets):
            t0 = time.perf_counter()
            champ.trigger(
                base_url=sim.base_url,
                token=simulator.DEMO_TOKEN,
                workflow_id=simulator.WORKFLOW_SLOW,
                input={"alone": i},
            )
            alone.append(time.perf_counter() - t0)

            t0 = time.perf_counter()
            response = client.post(
                reverse("preset_run", args=[preset.pk]),
                {"submission_key": new_submission_key()},
            )
            portal.append(time.perf_counter() - t0)
            assert response.status_code == 302, response.status_code
        started = Run.objects.filter(organisation=organisation).exclude(champ_run_id=None)
        assert started.count() == count, "every click must start exactly one run"
    return {
        "clicks": count,
        "simulator_post_alone_p50_ms": round(statistics.median(alone) * 1000, 2),
        "simulator_post_alone_p95_ms": round(percentile(alone, 95) * 1000, 2),
        "portal_one_click_p50_ms": round(statistics.median(portal) * 1000, 2),
        "portal_one_click_p95_ms": round(percentile(portal, 95) * 1000, 2),
        "ratio_p50": round(statistics.median(portal) / statistics.median(alone), 2),
    }
