"""
Site-wide defaults of the run safeguards, read from Django settings with a
fallback, so the portal works with none of them set.

* ``CHAMP_DUPLICATE_WINDOW_MINUTES`` (2): the duplicate guard's window for
  runs without a preset (a preset has its own).
* ``CHAMP_STUCK_DEFAULT_MINUTES`` (60): pending or in progress this long is
  stuck, for runs without a preset or of a preset with too little history.
* ``CHAMP_STUCK_MIN_MINUTES`` (5): the automatic limit (3 x p95) is never
  below this.
* ``CHAMP_STUCK_SUSPENDED_MINUTES`` (1440): suspended this long is stuck
  (a preset may set its own ``suspended_limit_minutes``).
* ``CHAMP_PORTAL_URL`` (``http://127.0.0.1:8000``): the portal's address,
  for the links in emails.
"""

from django.conf import settings


def _minutes(name: str, default: int) -> int:
    value = getattr(settings, name, default)
    return default if value is None else int(value)


def duplicate_window_minutes() -> int:
    return _minutes("CHAMP_DUPLICATE_WINDOW_MINUTES", 2)


def stuck_default_minutes() -> int:
    return _minutes("CHAMP_STUCK_DEFAULT_MINUTES", 60)


def stuck_min_minutes() -> int:
    return _minutes("CHAMP_STUCK_MIN_MINUTES", 5)


def stuck_suspended_minutes() -> int:
    return _minutes("CHAMP_STUCK_SUSPENDED_MINUTES", 24 * 60)


def portal_url() -> str:
    return str(getattr(settings, "CHAMP_PORTAL_URL", "http://127.0.0.1:8000")).rstrip("/")
