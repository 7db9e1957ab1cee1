"""
Shareable, pre-filled new-run links.

A link opens the new-run form filled in; it never starts anything (a GET
never does): the person who opens it reads the form and presses *Start run*.

    /runs/new/?preset=5                       the preset as saved
    /runs/new/?preset=5&input.customer=ACME   …with one key of its input changed
    /runs/new/?preset=5&input.options.retries=3&input.dry_run=true
    /runs/new/?preset=5&input={"customer":"ACME"}   the whole input replaced
    /runs/new/?organisation=org-a&workflow=101&input={"a":1}   no preset

``input.<path>=<value>``: the path is a dotted chain of object keys (objects
are created on the way); the value is read as JSON when it is JSON
(``3``, ``true``, ``null``, ``{"a": 1}``, ``"42"`` for the string 42) and as
plain text otherwise (``ACME``). ``input=`` is applied first, then the
``input.*`` keys. The result is validated like typed input (a JSON object,
64 KB at most).
"""

import json
from dataclasses import dataclass, field
from urllib.parse import urlencode

from django import forms
from django.http import QueryDict

from runs.forms import parse_json_object
from runs.jsondiff import diff

#: At most this many ``input.*`` parameters are read from one link.
MAX_KEYS = 100
PREFIX = "input."


@dataclass
class Prefill:
    """What a link asked for: the input to show, and what was wrong with the link."""

    input: dict
    errors: list[str] = field(default_factory=list)
    used: bool = False


def _value(text: str):
    try:
        return json.loads(text)
    except ValueError:
        return text


def prefill_input(query: QueryDict, *, base: dict) -> Prefill:
    """Apply a link's ``input`` / ``input.*`` parameters to ``base`` (not modified)."""
    result = Prefill(input=json.loads(json.dumps(base)))
    if "input" in query:
        result.used = True
        try:
            result.input = parse_json_object(query["input"], what="The link's input")
        except forms.ValidationError as exc:
            result.errors.extend(exc.messages)
    keys = [name for name in query if name.startswith(PREFIX)]
    if len(keys) > MAX_KEYS:
        result.errors.append(f"The link sets more than {MAX_KEYS} input keys; the rest ignored.")
        keys = keys[:MAX_KEYS]
    for name in keys:
        result.used = True
        path = name[len(PREFIX) :].split(".")
        if not all(path):
            result.errors.append(f"“{name}” is not a key path (e.g. input.customer).")
            continue
        target = result.input
        for key in path[:-1]:
            if not isinstance(target.get(key), dict):
                target[key] = {}
            target = target[key]
        target[path[-1]] = _value(query[name])
    try:
        parse_json_object(json.dumps(result.input), what="The link's input")
    except forms.ValidationError as exc:
        result.errors.extend(exc.messages)
        result.input = base
    return result


def share_query(*, preset=None, organisation=None, workflow_id=None, input: dict, base=None):
    """
    The query string of a link that re-opens the form with this input.

    With a preset, only the differences from ``base`` (the preset's input) are
    put in the link — as ``input.<key>=…`` when every difference is a changed
    or added object key, else as the whole ``input=``.
    """
    params: list[tuple[str, str]] = []
    if preset is not None:
        params.append(("preset", str(preset.pk)))
    else:
        if organisation is not None:
            params.append(("organisation", organisation.slug))
        if workflow_id is not None:
            params.append(("workflow", str(workflow_id)))
    if preset is not None and preset.workflow_id != workflow_id and workflow_id is not None:
        params.append(("workflow", str(workflow_id)))
    if base is None:
        if input:
            params.append(("input", _compact(input)))
        return urlencode(params)
    changes = diff(base, input)
    dotted = all(
        change.kind in ("added", "changed")
        and all(isinstance(key, str) and key and "." not in key for key in change.path)
        for change in changes
    )
    if dotted:
        for change in changes:
            params.append((PREFIX + ".".join(change.path), _as_param(change.new)))
    else:
        params.append(("input", _compact(input)))
    return urlencode(params)


def _compact(value) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def _as_param(value) -> str:
    """Text that ``_value`` reads back as ``value``."""
    if isinstance(value, str) and not _looks_like_json(value):
        return value
    return _compact(value)


def _looks_like_json(text: str) -> bool:
    try:
        json.loads(text)
    except ValueError:
        return False
    return True
