"""
Re-encrypt every stored API token under the newest key.

Rotation: put a new key first in CHAMP_PORTAL_TOKEN_KEYS (keeping the old one
after it), run this command, then drop the old key once it reports no failure.
"""

from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from runs import crypto
from runs.models import ApiToken, AuditAction, AuditEntry


class Command(BaseCommand):
    help = "Re-encrypt every API token under the newest CHAMP_PORTAL_TOKEN_KEYS key."

    def handle(self, *args, **options):
        rotated, failures = 0, []
        for token in ApiToken.objects.select_related("organisation").order_by("pk").iterator():
            try:
                ciphertext = crypto.reencrypt_token(
                    token.ciphertext, organisation_id=token.organisation_id, token_uid=token.uid
                )
            except crypto.TokenDecryptError as exc:
                # Left untouched: a key that is missing today may be found tomorrow.
                failures.append(token)
                self.stderr.write(
                    f"token {token.pk} ({token.label}, {token.hint}, {token.organisation}): {exc}"
                )
                continue
            with transaction.atomic():
                # Row by row, and only if nobody changed it meanwhile.
                ApiToken.objects.filter(pk=token.pk, ciphertext=token.ciphertext).update(
                    ciphertext=ciphertext
                )
            rotated += 1
        AuditEntry.objects.record(
            action=AuditAction.TOKENS_ROTATED,
            actor_label="system",
            changes={"rotated": rotated, "failed": [token.pk for token in failures]},
        )
        self.stdout.write(f"Re-encrypted {rotated} token(s); {len(failures)} failure(s).")
        if failures:
            raise CommandError(
                f"{len(failures)} token(s) could not be decrypted with the configured keys; "
                "they were left as they were and need re-entry (or the old key back)."
            )
