"""Template helpers for the preset and run pages."""

import json
from datetime import timedelta

from django import template

from runs.forms import new_submission_key
from runs.history import format_duration

register = template.Library()


@register.simple_tag
def submission_key() -> str:
    """A fresh one-time nonce for a form that starts a run (one per render)."""
    return new_submission_key()


@register.filter
def pretty_json(value) -> str:
    """
    ``value`` as indented JSON text, for a ``<pre>``. Autoescaped like any
    string: never mark it safe (it carries whatever Champ returned).
    """
    try:
        return json.dumps(value, indent=2, ensure_ascii=False)
    except (TypeError, ValueError, RecursionError):
        return repr(value)


@register.filter
def elapsed(delta) -> str:
    """A duration in plain words: ``0.4 s``, ``12 s``, ``3 min 5 s``, ``2 h 7 min``."""
    if not isinstance(delta, timedelta):
        return ""
    return format_duration(delta)
