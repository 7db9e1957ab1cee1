"""The run history (``/runs/``) and its CSV / JSON exports of the filtered set."""

from django.http import HttpRequest, HttpResponse, HttpResponseBadRequest, StreamingHttpResponse
from django.http.request import QueryDict
from django.shortcuts import render
from django.urls import reverse
from django.utils import timezone
from django.utils.cache import patch_cache_control
from django.views.decorators.http import require_GET

from runs import stuck
from runs.filters import RunFilter
from runs.history import (
    Page,
    SortKey,
    export_rows,
    format_duration,
    input_summary,
    paginate,
    stream_csv,
    stream_json,
)
from runs.models import Run

#: Columns a history row shows; the rest (e.g. a large output) stays in the database.
_DEFERRED = ("output", "preset_input", "last_poll_error", "champ_url")


@require_GET
def run_list(request: HttpRequest) -> HttpResponse:
    """My organisations' runs, filtered from the URL, one keyset page at a time."""
    filterset = _filterset(request)
    sort = SortKey.parse(filterset.selected_sort())
    if filterset.is_valid():
        page = paginate(
            filterset.qs.select_related("organisation", "preset", "triggered_by").defer(
                *_DEFERRED
            ),
            sort,
            after=request.GET.get("after"),
            before=request.GET.get("before"),
            last=request.GET.get("page") == "last",
        )
    else:
        # Never fall back to "no filter": show what is wrong and nothing else.
        page = Page(rows=[], next_cursor=None, prev_cursor=None)
    for run in page.rows:
        run.input_summary = input_summary(run.input)
        run.duration_text = format_duration(run.duration)
    stuck.flag(page.rows)

    query = filter_query(request)
    base = reverse("run_list")
    context = {
        "filterset": filterset,
        "form": filterset.form,
        "page": page,
        "sort": sort,
        "sort_links": _sort_links(query, sort),
        "filter_query": query.urlencode(),
        "first_url": _url(base, query),
        "last_url": _url(base, query, page="last"),
        "next_url": _url(base, query, after=page.next_cursor) if page.has_next else None,
        "prev_url": _url(base, query, before=page.prev_cursor) if page.has_previous else None,
        "export_csv_url": _url(reverse("run_export_csv"), query),
        "export_json_url": _url(reverse("run_export_json"), query),
        "is_filtered": any(name != "sort" for name in query),
    }
    if request.headers.get("HX-Request"):
        return render(request, "partials/history_rows.html", context)
    return render(request, "runs/run_list.html", context)


@require_GET
def run_export_csv(request: HttpRequest) -> HttpResponse:
    """The filtered runs as CSV, streamed (see ``runs.history.stream_csv``)."""
    return _export(request, stream_csv, "csv", "text/csv; charset=utf-8")


@require_GET
def run_export_json(request: HttpRequest) -> HttpResponse:
    """The filtered runs as one JSON array (one object per line), streamed."""
    return _export(request, stream_json, "json", "application/json")


def _export(request: HttpRequest, stream, extension: str, content_type: str) -> HttpResponse:
    filterset = _filterset(request)
    if not filterset.is_valid():
        # An export of "everything" when a filter was refused would be a leak
        # of scope, not just a surprise: refuse instead.
        problems = "; ".join(
            f"{name}: {' '.join(errors)}" for name, errors in filterset.errors.items()
        )
        return HttpResponseBadRequest(
            f"Invalid filters, nothing exported. {problems}", content_type="text/plain"
        )
    rows = export_rows(filterset.qs, SortKey.parse(filterset.selected_sort()))
    response = StreamingHttpResponse(stream(rows), content_type=content_type)
    stamp = timezone.now().strftime("%Y%m%d-%H%M%S")
    response["Content-Disposition"] = f'attachment; filename="runs-{stamp}.{extension}"'
    patch_cache_control(response, private=True, no_store=True)
    return response


def _filterset(request: HttpRequest) -> RunFilter:
    return RunFilter(request.GET, queryset=Run.objects.for_user(request.user), request=request)


def filter_query(request: HttpRequest) -> QueryDict:
    """The request's filter parameters only (no cursor), in a stable order."""
    query = QueryDict(mutable=True)
    for name in RunFilter.params():
        values = [value for value in request.GET.getlist(name) if value != ""]
        if values:
            query.setlist(name, values)
    return query


def _url(base: str, query: QueryDict, **extra) -> str:
    query = query.copy()
    for name, value in extra.items():
        query[name] = value
    encoded = query.urlencode()
    return f"{base}?{encoded}" if encoded else base


def _sort_links(query: QueryDict, sort: SortKey) -> dict:
    """Per sortable column: the URL sorting by it (toggling the direction) and an arrow."""
    links = {}
    for name in ("started", "duration"):
        if sort.name == name:
            target = name if sort.descending else "-" + name
            arrow = "▼" if sort.descending else "▲"
        else:
            target, arrow = "-" + name, ""
        links[name] = {"url": _url(reverse("run_list"), query, sort=target), "arrow": arrow}
    return links
