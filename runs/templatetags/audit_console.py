"""
The admin's date drill-down for large tables.

Django's ``date_hierarchy`` lists the years (months, days) that have rows with
``SELECT DISTINCT`` over every row of the list: a full scan of a million runs
on every page view. This one reads the first and the last date (two index
lookups) and offers every period in between; a period in the middle may turn
out to be empty, which costs one click, not a full scan per page view.
"""

import datetime

from django import template
from django.contrib.admin.templatetags.admin_list import date_hierarchy
from django.utils import formats, timezone
from django.utils.text import capfirst
from django.utils.translation import gettext as _

register = template.Library()


@register.inclusion_tag("admin/date_hierarchy.html")
def range_date_hierarchy(cl):
    field = cl.date_hierarchy
    names = {part: f"{field}__{part}" for part in ("year", "month", "day")}
    year, month, day = (cl.params.get(names[part]) for part in ("year", "month", "day"))
    if year and month and day:
        # The single-day view runs no query: Django's is fine.
        return date_hierarchy(cl)

    ordered = cl.queryset.order_by().values_list(field, flat=True)
    first = ordered.order_by(field).first()
    last = ordered.order_by(f"-{field}").first()
    if first is None or last is None:
        return {"show": False}
    first, last = timezone.localtime(first), timezone.localtime(last)

    def link(filters):
        return cl.get_query_string(filters, [f"{field}__"])

    if not year and first.year == last.year:
        year = first.year
        if first.month == last.month:
            month = first.month

    if year and month:
        year, month = int(year), int(month)
        start = first.date() if (first.year, first.month) == (year, month) else None
        end = last.date() if (last.year, last.month) == (year, month) else None
        days = _days(year, month, start, end)
        return {
            "show": True,
            "back": {"link": link({names["year"]: year}), "title": str(year)},
            "choices": [
                {
                    "link": link(
                        {names["year"]: year, names["month"]: month, names["day"]: d.day}
                    ),
                    "title": capfirst(formats.date_format(d, "MONTH_DAY_FORMAT")),
                }
                for d in days
            ],
        }
    if year:
        year = int(year)
        months = [
            datetime.date(year, m, 1)
            for m in range(1, 13)
            if (year, m) >= (first.year, first.month) and (year, m) <= (last.year, last.month)
        ]
        return {
            "show": True,
            "back": {"link": link({}), "title": _("All dates")},
            "choices": [
                {
                    "link": link({names["year"]: year, names["month"]: m.month}),
                    "title": capfirst(formats.date_format(m, "YEAR_MONTH_FORMAT")),
                }
                for m in months
            ],
        }
    return {
        "show": True,
        "back": None,
        "choices": [
            {"link": link({names["year"]: str(y)}), "title": str(y)}
            for y in range(first.year, last.year + 1)
        ],
    }


def _days(year, month, start, end) -> list[datetime.date]:
    day = start or datetime.date(year, month, 1)
    days = []
    while day.month == month and (end is None or day <= end):
        days.append(day)
        day += datetime.timedelta(days=1)
    return days
