"""
Run history: sorting, keyset pagination and the streamed exports.

The history page never counts. It pages with a *keyset* (a cursor on the sort
key plus the id, ``?after=…`` / ``?before=…``), so page 20,000 costs what page
1 costs: an index range scan of one page, whatever the size of the table.
The filters themselves are in ``runs/filters.py``.

Exports stream the filtered set through ``QuerySet.iterator()`` in chunks
(constant memory for a million rows); CSV cells that a spreadsheet would read
as a formula are defused with a leading ``'`` (OWASP, "CSV Injection":
https://owasp.org/www-community/attacks/CSV_Injection).
"""

import csv
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from django.contrib.auth import get_user_model
from django.db.models import DurationField, ExpressionWrapper, F, Q, QuerySet

PAGE_SIZE = 50
EXPORT_CHUNK_SIZE = 2000
SUMMARY_LENGTH = 80

#: ``?sort=`` values: the display order of the history.
SORTS = {
    "-started": "Newest first",
    "started": "Oldest first",
    "-duration": "Longest first",
    "duration": "Shortest first",
}
DEFAULT_SORT = "-started"

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


# --- Sorting and keyset pagination ---------------------------------------------


@dataclass(frozen=True)
class SortKey:
    """The order of a listing: one key (then the id) ascending or descending."""

    name: str  # "started" or "duration"
    descending: bool

    @classmethod
    def parse(cls, value: str | None) -> "SortKey":
        value = value if value in SORTS else DEFAULT_SORT
        return cls(name=value.lstrip("-"), descending=value.startswith("-"))

    @property
    def param(self) -> str:
        return ("-" if self.descending else "") + self.name

    @property
    def field(self) -> str:
        return "triggered_at" if self.name == "started" else "duration"

    @property
    def nullable(self) -> bool:
        # Open runs have no duration yet: they come last in either direction.
        return self.name == "duration"

    def prepare(self, queryset: QuerySet) -> QuerySet:
        if self.name == "duration":
            queryset = queryset.alias(duration=run_duration())
        return queryset

    def ordering(self, *, reverse: bool = False) -> list:
        """ORDER BY for the display order, or for walking it backwards (``reverse``)."""
        descending = self.descending != reverse
        nulls = {}
        if self.nullable:
            # Open runs are shown last; walking backwards they come first.
            nulls = {"nulls_first": True} if reverse else {"nulls_last": True}
        key = F(self.field)
        key = key.desc(**nulls) if descending else key.asc(**nulls)
        return [key, F("id").desc() if descending else F("id").asc()]

    # Cursors are "<key>~<id>": the key as integer microseconds (since the epoch
    # for a start time, of length for a duration), empty for a null duration.

    def cursor_of(self, run) -> str:
        value = getattr(run, "triggered_at" if self.name == "started" else "sort_duration")
        if value is None:
            micros = ""
        elif isinstance(value, timedelta):
            micros = str(value // timedelta(microseconds=1))
        else:
            micros = str((value - _EPOCH) // timedelta(microseconds=1))
        return f"{micros}~{run.pk}"

    def parse_cursor(self, cursor: str | None):
        """``(key value, id)`` or None for a missing or malformed cursor."""
        if not cursor or cursor.count("~") != 1:
            return None
        micros, _, pk = cursor.partition("~")
        try:
            pk = int(pk)
            if micros == "":
                return (None, pk) if self.nullable else None
            delta = timedelta(microseconds=int(micros))
            return (delta if self.name == "duration" else _EPOCH + delta), pk
        except (ValueError, OverflowError):
            return None

    def beyond(self, cursor, *, forward: bool) -> Q:
        """The rows after (``forward``) or before the cursor, in display order."""
        value, pk = cursor
        # "Later in display order" means smaller when descending.
        later = "lt" if self.descending == forward else "gt"
        field = self.field
        if not self.nullable:
            # `key <= v AND (key < v OR id < i)`: the first term is an index range.
            return Q(**{f"{field}__{later}e": value}) & (
                Q(**{f"{field}__{later}": value}) | Q(**{field: value, f"id__{later}": pk})
            )
        if forward:
            if value is None:
                return Q(**{f"{field}__isnull": True, f"id__{later}": pk})
            return (
                Q(**{f"{field}__{later}": value})
                | Q(**{field: value, f"id__{later}": pk})
                | Q(**{f"{field}__isnull": True})
            )
        if value is None:
            return Q(**{f"{field}__isnull": False}) | Q(
                **{f"{field}__isnull": True, f"id__{later}": pk}
            )
        return Q(**{f"{field}__isnull": False}) & (
            Q(**{f"{field}__{later}": value}) | Q(**{field: value, f"id__{later}": pk})
        )


def run_duration():
    """finished_at - triggered_at (NULL while the run is open)."""
    return ExpressionWrapper(F("finished_at") - F("triggered_at"), output_field=DurationField())


@dataclass
class Page:
    """One page of a keyset-paginated listing: its rows and the cursors around it."""

    rows: list
    next_cursor: str | None
    prev_cursor: str | None
    is_last: bool = False

    @property
    def has_next(self) -> bool:
        return self.next_cursor is not None

    @property
    def has_previous(self) -> bool:
        return self.prev_cursor is not None


def paginate(
    queryset: QuerySet,
    sort: SortKey,
    *,
    after: str | None = None,
    before: str | None = None,
    last: bool = False,
    size: int | None = None,
) -> Page:
    """
    One page of ``queryset`` in ``sort`` order, without counting anything.

    ``after``: the page following that cursor; ``before``: the page preceding
    it; ``last``: the final page. Fetches ``size + 1`` rows to know whether
    another page exists. A malformed cursor gives the first page.
    """
    size = size or PAGE_SIZE
    queryset = sort.prepare(queryset)
    if sort.name == "duration":
        queryset = queryset.annotate(sort_duration=F("duration"))
    after_key, before_key = sort.parse_cursor(after), sort.parse_cursor(before)

    if last or before_key is not None:
        backwards = queryset.order_by(*sort.ordering(reverse=True))
        if before_key is not None:
            backwards = backwards.filter(sort.beyond(before_key, forward=False))
        rows = list(backwards[: size + 1])
        more_before = len(rows) > size
        rows = rows[:size][::-1]
        return Page(
            rows=rows,
            next_cursor=sort.cursor_of(rows[-1]) if rows and before_key is not None else None,
            prev_cursor=sort.cursor_of(rows[0]) if rows and more_before else None,
            is_last=before_key is None,
        )

    forwards = queryset.order_by(*sort.ordering())
    if after_key is not None:
        forwards = forwards.filter(sort.beyond(after_key, forward=True))
    rows = list(forwards[: size + 1])
    more_after = len(rows) > size
    rows = rows[:size]
    return Page(
        rows=rows,
        next_cursor=sort.cursor_of(rows[-1]) if rows and more_after else None,
        prev_cursor=sort.cursor_of(rows[0]) if rows and after_key is not None else None,
        is_last=not more_after,
    )


def input_summary(value, length: int = SUMMARY_LENGTH) -> str:
    """The first ``length`` characters of ``value`` as compact JSON (escaped by the template)."""
    if value in (None, {}, []):
        return ""
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=str)
    return text if len(text) <= length else text[: length - 1] + "…"


def format_duration(delta: timedelta | None) -> str:
    """``0.4 s``, ``12 s``, ``3 min 5 s``, ``2 h 7 min``, ``3 d 4 h``; empty for None."""
    if delta is None:
        return ""
    seconds = max(delta.total_seconds(), 0.0)
    if seconds < 10:
        return f"{seconds:.1f} s"
    if seconds < 60:
        return f"{seconds:.0f} s"
    minutes, seconds = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {seconds} s"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours} h {minutes} min"
    return f"{hours // 24} d {hours % 24} h"


# --- Exports -------------------------------------------------------------------------

EXPORT_COLUMNS = [
    "id",
    "organisation",
    "status",
    "workflow_id",
    "preset",
    "champ_run_id",
    "triggered_by",
    "triggered_at",
    "finished_at",
    "duration_seconds",
    "input",
    "output",
    "error",
]

#: A spreadsheet reads a cell starting with one of these as a formula.
FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")


def export_rows(queryset: QuerySet, sort: SortKey) -> Iterator[dict]:
    """
    The filtered runs as plain dicts (``EXPORT_COLUMNS``), streamed from the database.

    ``values_list`` + ``iterator``: no model instances, no prefetch cache, one
    chunk of rows in memory at a time. Never any token material.
    """
    username = f"triggered_by__{get_user_model().USERNAME_FIELD}"
    rows = (
        sort.prepare(queryset)
        .order_by(*sort.ordering())
        .values_list(
            "id",
            "organisation__name",
            "status",
            "workflow_id",
            "preset__name",
            "champ_run_id",
            username,
            "triggered_at",
            "finished_at",
            "input",
            "output",
            "error",
        )
    )
    for row in rows.iterator(chunk_size=EXPORT_CHUNK_SIZE):
        pk, org, status, workflow, preset, champ_id, user, started, finished, inp, out, err = row
        yield {
            "id": pk,
            "organisation": org,
            "status": status,
            "workflow_id": workflow,
            "preset": preset,
            "champ_run_id": champ_id,
            "triggered_by": user,
            "triggered_at": started.isoformat() if started else None,
            "finished_at": finished.isoformat() if finished else None,
            "duration_seconds": (
                round((finished - started).total_seconds(), 3) if finished and started else None
            ),
            "input": inp,
            "output": out,
            "error": err,
        }


def csv_safe(value) -> str:
    """A CSV cell: JSON for structures, ``'``-prefixed when it would start a formula."""
    if value is None:
        return ""
    if isinstance(value, dict | list):
        text = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    else:
        text = str(value)
    if isinstance(value, str | dict | list) and text.startswith(FORMULA_PREFIXES):
        return "'" + text
    return text


class _Echo:
    """A file-like object whose write() returns what it was given (Django's CSV streaming)."""

    def write(self, value: str) -> str:
        return value


def stream_csv(rows: Iterable[dict], *, batch: int = 200) -> Iterator[str]:
    """A header line, then one line per row (yielded in batches, for throughput)."""
    writer = csv.writer(_Echo())
    yield writer.writerow(EXPORT_COLUMNS)
    buffer = []
    for row in rows:
        buffer.append(writer.writerow([csv_safe(row[column]) for column in EXPORT_COLUMNS]))
        if len(buffer) >= batch:
            yield "".join(buffer)
            buffer.clear()
    if buffer:
        yield "".join(buffer)


def stream_json(rows: Iterable[dict], *, batch: int = 200) -> Iterator[str]:
    """One JSON array, one object per line, written as the rows arrive."""
    yield "["
    separator = "\n"
    buffer = []
    for row in rows:
        buffer.append(separator + json.dumps(row, ensure_ascii=False, default=str))
        separator = ",\n"
        if len(buffer) >= batch:
            yield "".join(buffer)
            buffer.clear()
    buffer.append("\n]\n")
    yield "".join(buffer)
