"""
A structural diff of two JSON values: which keys were added, removed or changed, by path.

Pure functions, no Django. Used to compare two runs' inputs (or outputs), a run
with its preset version, two consecutive preset versions, and to record which
keys a run overrode.

Semantics (JSON's, not Python's):

* objects are compared key by key, recursively; the order of keys never matters;
* arrays are compared position by position: an item that differs is ``changed``
  at its index, extra items at the end are ``added`` / ``removed`` (an insertion
  at the front therefore shows as every later item changed — predictable, and
  what a side-by-side view lines up);
* ``true`` is not ``1`` and ``false`` is not ``0`` (Python says they are);
  ``1`` and ``1.0`` are the same number;
* a value whose type changes (object → array, number → string …) is one
  ``changed`` entry at that path, carrying both whole values.

``apply_diff(old, diff(old, new)) == new`` for any two JSON values.
"""

import copy
import hashlib
import json
import re
from dataclasses import dataclass
from typing import Any, Literal

Kind = Literal["added", "removed", "changed"]
Path = tuple[str | int, ...]

_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_\-]*$")


@dataclass(frozen=True)
class Change:
    """One difference: ``old`` is None for an addition, ``new`` None for a removal."""

    kind: Kind
    path: Path
    old: Any = None
    new: Any = None

    @property
    def path_text(self) -> str:
        return format_path(self.path)

    @property
    def old_text(self) -> str:
        return "" if self.kind == "added" else compact(self.old)

    @property
    def new_text(self) -> str:
        return "" if self.kind == "removed" else compact(self.new)


def diff(old: Any, new: Any) -> list[Change]:
    """The changes that turn ``old`` into ``new``, in path order (objects' keys sorted)."""
    changes: list[Change] = []
    _walk(old, new, (), changes)
    return changes


def _walk(old: Any, new: Any, path: Path, out: list[Change]) -> None:
    if isinstance(old, dict) and isinstance(new, dict):
        for key in sorted(old.keys() | new.keys(), key=str):
            if key not in new:
                out.append(Change("removed", (*path, key), old=old[key]))
            elif key not in old:
                out.append(Change("added", (*path, key), new=new[key]))
            else:
                _walk(old[key], new[key], (*path, key), out)
    elif isinstance(old, list) and isinstance(new, list):
        common = min(len(old), len(new))
        for index in range(common):
            _walk(old[index], new[index], (*path, index), out)
        for index in range(common, len(old)):
            out.append(Change("removed", (*path, index), old=old[index]))
        for index in range(common, len(new)):
            out.append(Change("added", (*path, index), new=new[index]))
    elif not json_equal(old, new):
        out.append(Change("changed", path, old=old, new=new))


def json_equal(a: Any, b: Any) -> bool:
    """Equality as JSON sees it: booleans are not numbers, 1 == 1.0, key order is irrelevant."""
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if isinstance(a, int | float) and isinstance(b, int | float):
        return a == b
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(json_equal(a[key], b[key]) for key in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(json_equal(x, y) for x, y in zip(a, b, strict=True))
    if type(a) is not type(b):
        return False
    return a == b


def json_digest(value: Any) -> str:
    """
    A SHA-256 hex digest of ``value`` that agrees with :func:`json_equal`: equal
    values have equal digests (key order ignored, ``1.0`` written as ``1``,
    ``true`` kept apart from ``1``), so an index can find equal inputs.
    """

    def canonical(item: Any) -> Any:
        if isinstance(item, float) and item.is_integer():
            return int(item)
        if isinstance(item, dict):
            return {key: canonical(inner) for key, inner in item.items()}
        if isinstance(item, list):
            return [canonical(inner) for inner in item]
        return item

    text = json.dumps(canonical(value), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def apply_diff(old: Any, changes: list[Change]) -> Any:
    """``old`` with ``changes`` applied (a new value; ``old`` is not modified)."""
    result = copy.deepcopy(old)
    removals = []
    for change in changes:
        if not change.path:
            result = copy.deepcopy(change.new) if change.kind != "removed" else None
            continue
        if change.kind == "removed":
            removals.append(change)
            continue
        parent = _resolve(result, change.path[:-1])
        key = change.path[-1]
        value = copy.deepcopy(change.new)
        if isinstance(parent, list) and change.kind == "added":
            parent.insert(key, value)
        else:
            parent[key] = value
    # Array tails are removed from the end, so earlier indexes stay valid.
    for change in reversed(removals):
        parent = _resolve(result, change.path[:-1])
        del parent[change.path[-1]]
    return result


def _resolve(value: Any, path: Path) -> Any:
    for key in path:
        value = value[key]
    return value


def format_path(path: Path) -> str:
    """``options.retries``, ``items[2].name``, ``["odd key"]``; the whole value is ``(root)``."""
    if not path:
        return "(root)"
    parts: list[str] = []
    for key in path:
        if isinstance(key, int):
            parts.append(f"[{key}]")
        elif _IDENTIFIER.match(key):
            parts.append(f".{key}" if parts else key)
        else:
            parts.append(f"[{json.dumps(key, ensure_ascii=False)}]")
    return "".join(parts)


def compact(value: Any, limit: int = 200) -> str:
    """``value`` as one line of JSON, cut at ``limit`` characters (escaped by the templates)."""
    text = json.dumps(value, ensure_ascii=False, separators=(", ", ": "), default=str)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def changed_paths(old: Any, new: Any) -> list[str]:
    """The paths (as text) that differ between ``old`` and ``new``."""
    return [change.path_text for change in diff(old, new)]


def summary(changes: list[Change]) -> str:
    """``2 changed, 1 added`` — or ``no differences``."""
    counts = {"changed": 0, "added": 0, "removed": 0}
    for change in changes:
        counts[change.kind] += 1
    parts = [f"{count} {kind}" for kind, count in counts.items() if count]
    return ", ".join(parts) if parts else "no differences"
