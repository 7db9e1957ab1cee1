"""
Check the audit trail's hash chain; exit non-zero at the first edited,
deleted or reordered entry. See ``runs/audit.py`` for what it can and cannot see.
"""

from django.core.management.base import BaseCommand, CommandError

from runs.audit import verify_audit_chain


class Command(BaseCommand):
    help = (
        "Verify the audit log's hash chain: report the first edited, deleted or "
        "reordered entry and exit non-zero."
    )

    def handle(self, *args, **options):
        report = verify_audit_chain()
        if not report.ok:
            raise CommandError(
                f"Audit chain broken at entry #{report.broken_id}: {report.problem}. "
                f"{report.verified} entries before it verified."
            )
        self.stdout.write(f"{report.verified} entries verified.")
        if report.last_id is not None:
            # Kept elsewhere, this detects entries later cut off the end.
            self.stdout.write(f"Last entry: #{report.last_id}, hash {report.last_hash}")
