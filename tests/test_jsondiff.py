"""The structural JSON diff: nested objects and arrays, JSON's equality, and its laws."""

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from runs.jsondiff import (
    Change,
    apply_diff,
    changed_paths,
    diff,
    format_path,
    json_digest,
    json_equal,
    summary,
)

# --- Examples -----------------------------------------------------------------------------


def kinds(changes):
    return [(change.kind, change.path_text) for change in changes]


def test_identical_values_have_no_differences():
    value = {"a": [1, {"b": None}], "c": "x"}
    assert diff(value, json.loads(json.dumps(value))) == []


def test_added_removed_and_changed_keys_are_reported_with_their_paths():
    old = {"customer": "ACME", "retries": 3, "legacy": True}
    new = {"customer": "Initech", "retries": 3, "dry_run": False}
    assert diff(old, new) == [
        Change("changed", ("customer",), old="ACME", new="Initech"),
        Change("added", ("dry_run",), new=False),
        Change("removed", ("legacy",), old=True),
    ]
    assert kinds(diff(old, new)) == [
        ("changed", "customer"),
        ("added", "dry_run"),
        ("removed", "legacy"),
    ]


def test_nested_objects_are_walked_key_by_key():
    old = {"options": {"retries": 3, "notify": {"email": "a@x.test", "sms": False}}}
    new = {"options": {"retries": 5, "notify": {"email": "a@x.test", "slack": "#ops"}}}
    changes = diff(old, new)
    assert kinds(changes) == [
        ("added", "options.notify.slack"),
        ("removed", "options.notify.sms"),
        ("changed", "options.retries"),
    ]
    assert changes[2].old == 3 and changes[2].new == 5
    assert changed_paths(old, new) == [
        "options.notify.slack",
        "options.notify.sms",
        "options.retries",
    ]


def test_arrays_are_compared_by_position_with_tails_added_or_removed():
    old = {"items": [{"sku": "A", "qty": 1}, {"sku": "B", "qty": 2}, {"sku": "C", "qty": 3}]}
    new = {"items": [{"sku": "A", "qty": 4}, {"sku": "B", "qty": 2}]}
    assert kinds(diff(old, new)) == [("changed", "items[0].qty"), ("removed", "items[2]")]
    assert kinds(diff(new, old)) == [("changed", "items[0].qty"), ("added", "items[2]")]
    assert diff(new, old)[1].new == {"sku": "C", "qty": 3}


def test_a_type_change_is_one_change_carrying_both_values():
    changes = diff({"a": {"b": 1}}, {"a": [1]})
    assert changes == [Change("changed", ("a",), old={"b": 1}, new=[1])]
    assert diff({"a": "1"}, {"a": 1}) == [Change("changed", ("a",), old="1", new=1)]
    assert diff({"a": None}, {"a": {}}) == [Change("changed", ("a",), old=None, new={})]


@pytest.mark.parametrize(
    "a, b, equal",
    [
        (True, 1, False),
        (False, 0, False),
        (1, 1.0, True),
        ({"a": 1, "b": 2}, {"b": 2, "a": 1}, True),
        ([1, 2], [2, 1], False),
        ({"a": [True]}, {"a": [1]}, False),
        ("x", "x", True),
        (None, None, True),
        (None, {}, False),
    ],
)
def test_json_equality_is_not_pythons(a, b, equal):
    assert json_equal(a, b) is equal
    assert (diff(a, b) == []) is equal
    assert (json_digest(a) == json_digest(b)) is equal


def test_whole_values_that_are_not_containers():
    assert diff(1, 2) == [Change("changed", (), old=1, new=2)]
    assert diff([], [1]) == [Change("added", (0,), new=1)]


@pytest.mark.parametrize(
    "path, text",
    [
        ((), "(root)"),
        (("a",), "a"),
        (("a", "b_c", "d-e"), "a.b_c.d-e"),
        (("items", 2, "name"), "items[2].name"),
        (("odd key", "x.y"), '["odd key"]["x.y"]'),
        ((0,), "[0]"),
        (("émoji 🎉",), '["émoji 🎉"]'),
    ],
)
def test_paths_read_like_code(path, text):
    assert format_path(path) == text


def test_summary_counts_each_kind():
    changes = diff({"a": 1, "b": 2}, {"a": 3, "c": 4})
    assert summary(changes) == "1 changed, 1 added, 1 removed"
    assert summary([]) == "no differences"


def test_values_shown_are_compact_and_cut():
    change = diff({"a": "x" * 500}, {"a": None})[0]
    assert len(change.old_text) == 200 and change.old_text.endswith("…")
    assert change.new_text == "null"
    added = diff({}, {"k": {"n": [1, 2]}})[0]
    assert (added.old_text, added.new_text) == ("", '{"n": [1, 2]}')


def test_apply_does_not_modify_the_original():
    old = {"a": [1, 2, 3], "b": {"c": 1}}
    snapshot = json.loads(json.dumps(old))
    new = apply_diff(old, diff(old, {"a": [9], "b": {"d": 2}}))
    assert new == {"a": [9], "b": {"d": 2}}
    assert old == snapshot


# --- Laws (property-based) -----------------------------------------------------------------------

scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**53), max_value=2**53)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8)
)
keys = st.sampled_from(["a", "b", "c", "d", "e.f", "g h", ""]) | st.text(max_size=4)
json_values = st.recursive(
    scalars,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(keys, children, max_size=4),
    max_leaves=20,
)
json_objects = st.dictionaries(keys, json_values, max_size=5)


@settings(max_examples=300, deadline=None)
@given(json_values, json_values)
def test_applying_the_diff_gives_the_new_value(old, new):
    assert json_equal(apply_diff(old, diff(old, new)), new)


@settings(max_examples=300, deadline=None)
@given(json_values, json_values)
def test_no_differences_exactly_when_equal(old, new):
    assert (diff(old, new) == []) == json_equal(old, new)
    assert diff(old, old) == []


@settings(max_examples=200, deadline=None)
@given(json_objects, json_objects)
def test_the_reverse_diff_swaps_added_and_removed(old, new):
    forward = {(c.path, c.kind) for c in diff(old, new)}
    swap = {"added": "removed", "removed": "added", "changed": "changed"}
    backward = {(c.path, swap[c.kind]) for c in diff(new, old)}
    assert forward == backward


@settings(max_examples=200, deadline=None)
@given(json_objects, json_objects)
def test_every_path_exists_on_the_side_it_claims(old, new):
    def has(value, path):
        for key in path:
            in_object = isinstance(value, dict) and key in value
            in_array = isinstance(value, list) and isinstance(key, int) and key < len(value)
            if not (in_object or in_array):
                return False
            value = value[key]
        return True

    for change in diff(old, new):
        assert has(old, change.path) == (change.kind != "added")
        assert has(new, change.path) == (change.kind != "removed")


@settings(max_examples=100, deadline=None)
@given(json_objects)
def test_key_order_never_matters(value):
    reordered = dict(reversed(list(value.items())))
    assert diff(value, reordered) == []


def _equal_variant(value):
    """The same JSON value written differently: keys reversed, integral numbers as floats."""
    if isinstance(value, dict):
        return {key: _equal_variant(value[key]) for key in reversed(list(value))}
    if isinstance(value, list):
        return [_equal_variant(item) for item in value]
    if isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    return value


@settings(max_examples=300, deadline=None)
@given(json_values)
def test_values_equal_as_json_have_one_digest(value):
    variant = _equal_variant(value)
    assert json_equal(value, variant)
    assert json_digest(value) == json_digest(variant)


@settings(max_examples=300, deadline=None)
@given(json_values, json_values)
def test_equal_digests_only_for_values_equal_as_json(a, b):
    assert (json_digest(a) == json_digest(b)) is json_equal(a, b)
