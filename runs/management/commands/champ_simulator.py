"""``manage.py champ_simulator --port 8765``: serve the built-in Champ simulator.

A thin wrapper around ``runs.simulator``; every option also reads a
``CHAMP_SIM_*`` environment variable (see ``--help`` and the README).
"""

import logging

from django.core.management.base import BaseCommand, CommandError

from runs import simulator_server

_FAULT_KNOBS = [
    "latency_ms",
    "fail_rate",
    "rate_limit_rate",
    "timeout_rate",
    "malformed_rate",
    "drop_rate",
    "hang_post",
    "drop_post",
    "redirect_to",
    "seed",
]


class Command(BaseCommand):
    help = "Serve the built-in Champ simulator (the CHAMP_API.md endpoints) until interrupted."
    requires_system_checks = []  # needs nothing from the portal: no database, no keys

    def add_arguments(self, parser):
        simulator_server.add_arguments(parser)

    def handle(self, *args, **options):
        try:
            sim = simulator_server.simulator_from_options(options)
        except ValueError as exc:
            raise CommandError(str(exc)) from exc
        if not logging.getLogger().handlers:  # show the simulator's own log lines
            logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
        faults = ", ".join(
            f"{name}={value}"
            for name, value in vars(sim.faults).items()
            if value and name in _FAULT_KNOBS
        )
        self.stdout.write(
            f"Champ simulator on http://{options['host']}:{options['port']} — "
            f"{len(sim.tokens)} token(s), time scale {sim.time_scale:g}"
            + (f", faults: {faults}" if faults else "")
            + (f", webhooks to {sim.webhook.url}" if sim.webhook else "")
        )
        sim.serve(options["host"], options["port"], access_log=options["access_log"])
