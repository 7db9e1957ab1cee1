"""System checks: a bad token key configuration fails `manage.py check` loudly."""

from django.conf import settings
from django.core.checks import Error, register
from django.core.exceptions import ImproperlyConfigured

from runs import crypto


@register("security")
def check_token_keys(app_configs=None, **kwargs):
    raw = getattr(settings, "CHAMP_PORTAL_TOKEN_KEYS", "")
    try:
        crypto.parse_keys(raw)
    except ImproperlyConfigured as exc:
        return [
            Error(
                str(exc),
                hint="Set CHAMP_PORTAL_TOKEN_KEYS to comma-separated Fernet keys, newest "
                "first, or unset it to use the key generated in var/token_keys.",
                id="runs.E001",
            )
        ]
    if raw.strip() and raw.strip() == settings.SECRET_KEY:
        return [Error("CHAMP_PORTAL_TOKEN_KEYS must differ from SECRET_KEY.", id="runs.E002")]
    return []
