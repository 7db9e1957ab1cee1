"""Show the poller's state: open runs, due polls, the oldest overdue poll, sweeps."""

import json

from django.core.management.base import BaseCommand

from runs.polling import poller_status


class Command(BaseCommand):
    help = "Show open runs, due polls, the oldest overdue poll and sweep heartbeats."

    def add_arguments(self, parser):
        parser.add_argument("--json", action="store_true", help="Print JSON.")

    def handle(self, *args, **options):
        status = poller_status()
        if options["json"]:
            self.stdout.write(json.dumps(status, indent=2, default=str))
            return
        self.stdout.write(f"Open runs:            {status['open_runs']}")
        self.stdout.write(f"  by status:          {status['open_by_status'] or '-'}")
        self.stdout.write(f"Due now:              {status['due_runs']}")
        overdue = status["oldest_overdue_seconds"]
        self.stdout.write(
            "Oldest overdue poll:  " + (f"{overdue:.1f} s" if overdue is not None else "none")
        )
        self.stdout.write(f"Runs with poll errors: {status['runs_with_poll_errors']}")
        self.stdout.write("Sweeps:")
        for slot in status["sweeps"]:
            if slot["owner"]:
                self.stdout.write(
                    f"  slot {slot['number']}: {slot['owner']}, {slot['polls']} polls, "
                    f"heartbeat {slot['heartbeat_age_seconds']:.1f} s ago"
                    + (" (STALE)" if slot["stale"] else "")
                )
            else:
                self.stdout.write(f"  slot {slot['number']}: idle")
        if not status["sweeps"]:
            self.stdout.write("  none yet (the first trigger starts one)")
