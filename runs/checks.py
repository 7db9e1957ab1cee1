"""
System checks: a bad token key configuration fails `manage.py check` loudly,
and `check --deploy` warns about key files other users can read.
"""

import os
import stat
from pathlib import Path

from django.conf import settings
from django.core.checks import Error, Warning, register
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


#: The secrets read from files: (environment variable, file name under var/, what it is).
SECRET_FILES = (
    ("CHAMP_PORTAL_SECRET_KEY", "secret_key", "Django secret key"),
    ("CHAMP_PORTAL_TOKEN_KEYS", "token_keys", "token encryption keys"),
)


@register("security", deploy=True)
def check_secret_file_modes(app_configs=None, **kwargs):
    """Key files readable by group or others (the generated ones are 0600)."""
    warnings = []
    for name, default, what in SECRET_FILES:
        if os.environ.get(name) is not None:
            continue  # from the environment: no file involved
        path = Path(os.environ.get(f"{name}_FILE") or Path(settings.VAR_DIR) / default)
        try:
            mode = stat.S_IMODE(path.stat().st_mode)
        except OSError:
            continue  # missing or unreadable: settings already refused to start
        if mode & 0o077:
            warnings.append(
                Warning(
                    f"{path} holds the {what} and other users can read it (mode {mode:04o}).",
                    hint=f"chmod 600 {path}",
                    id="runs.W001",
                )
            )
    return warnings
