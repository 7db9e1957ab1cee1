"""
The run history's filters (django-filter), all in the URL so a filtered view
can be bookmarked and shared.

Every choice list is scoped to the requesting user's organisations: a preset,
organisation or user of another organisation is not a valid choice, so it can
neither filter nor reveal anything. The base queryset is scoped as well
(``Run.objects.for_user``); these filters only narrow it.
"""

import json
from datetime import datetime, time, timedelta

import django_filters
from django import forms
from django.contrib.auth import get_user_model
from django.db.models import Q, TextField
from django.db.models.functions import Cast
from django.utils import timezone

from runs import stuck as stuck_runs
from runs.history import DEFAULT_SORT, SORTS
from runs.models import Organisation, Run, RunStatus, WorkflowPreset

MAX_QUERY_LENGTH = 200


def _user(request):
    return request.user if request is not None else None


def my_organisations(request):
    return Organisation.objects.for_user(_user(request)).order_by("name")


def my_presets(request):
    # Archived presets too: their runs stay in the history.
    return (
        WorkflowPreset.objects.filter(organisation__in=my_organisations(request))
        .select_related("organisation")
        .order_by("organisation__name", "name")
    )


def my_colleagues(request):
    """Everyone who shares an organisation with me (me included)."""
    return (
        get_user_model()
        .objects.filter(memberships__organisation__in=my_organisations(request))
        .distinct()
        .order_by(get_user_model().USERNAME_FIELD)
    )


class PresetChoiceField(django_filters.fields.ModelChoiceField):
    def label_from_instance(self, obj):
        archived = " (archived)" if obj.archived else ""
        return f"{obj.organisation.name} · {obj.name}{archived}"


class PresetFilter(django_filters.ModelChoiceFilter):
    field_class = PresetChoiceField


class IntegerFilter(django_filters.Filter):
    field_class = forms.IntegerField


class CheckboxFilter(django_filters.Filter):
    """``?name=1`` ticks it; absent or empty leaves it off."""

    field_class = forms.BooleanField


def _start_of(day) -> datetime:
    return timezone.make_aware(datetime.combine(day, time.min))


class RunFilter(django_filters.FilterSet):
    status = django_filters.MultipleChoiceFilter(
        choices=RunStatus.choices,
        widget=forms.CheckboxSelectMultiple,
        # A run has one status: no join, so no DISTINCT (which would defeat the indexes).
        distinct=False,
    )
    organisation = django_filters.ModelChoiceFilter(
        queryset=my_organisations,
        to_field_name="slug",
        empty_label="All my organisations",
    )
    preset = PresetFilter(queryset=my_presets, empty_label="Any preset")
    workflow = IntegerFilter(
        field_name="workflow_id",
        label="Workflow ID",
        min_value=1,
        widget=forms.NumberInput(attrs={"min": 1, "placeholder": "any"}),
    )
    triggered_by = django_filters.ModelChoiceFilter(
        queryset=my_colleagues, label="Triggered by", empty_label="Anyone"
    )
    mine = CheckboxFilter(label="Only my runs", method="filter_mine")
    stuck = CheckboxFilter(label="Only stuck runs", method="filter_stuck")
    started_from = django_filters.DateFilter(
        label="Started from",
        method="filter_started_from",
        widget=forms.DateInput(attrs={"type": "date"}, format="%Y-%m-%d"),
    )
    started_to = django_filters.DateFilter(
        label="Started to",
        method="filter_started_to",
        widget=forms.DateInput(attrs={"type": "date"}, format="%Y-%m-%d"),
    )
    q = django_filters.CharFilter(
        label="Text",
        method="filter_text",
        max_length=MAX_QUERY_LENGTH,
        widget=forms.TextInput(attrs={"placeholder": "preset name, input or output"}),
    )
    # Validated and rendered here with the filters; applied by the keyset
    # paginator (runs/history.py), which needs to know the order.
    sort = django_filters.ChoiceFilter(
        choices=list(SORTS.items()),
        method="keep",
        empty_label=None,
        label="Sort",
    )

    class Meta:
        model = Run
        fields = []

    #: The URL parameters that make up a filtered view (and nothing else).
    @classmethod
    def params(cls) -> list[str]:
        return list(cls.base_filters)

    def filter_mine(self, queryset, name, value):
        if value and self.request is not None:
            return queryset.filter(triggered_by=self.request.user)
        return queryset

    def filter_stuck(self, queryset, name, value):
        """Open runs unchanged far longer than usual (``runs.stuck``), from a few queries."""
        if not value:
            return queryset
        limits = stuck_runs.limits_for_open_runs(queryset)
        return queryset.open().filter(limits.q())

    def filter_started_from(self, queryset, name, value):
        return queryset.filter(triggered_at__gte=_start_of(value))

    def filter_started_to(self, queryset, name, value):
        # Inclusive: the whole of the "to" day.
        return queryset.filter(triggered_at__lt=_start_of(value + timedelta(days=1)))

    def filter_text(self, queryset, name, value):
        value = value.strip()
        if not value:
            return queryset
        # Evaluated first (a few ids): a plain `preset_id IN (…)` lets PostgreSQL
        # combine it with the trigram indexes below, a subquery does not.
        preset_ids = list(
            WorkflowPreset.objects.filter(
                organisation__in=my_organisations(self.request), name__icontains=value
            ).values_list("pk", flat=True)
        )
        matches = Q(preset__in=preset_ids) if preset_ids else Q(pk__in=[])
        # JSON is stored as text on SQLite (non-ASCII as \u escapes) and as
        # jsonb on PostgreSQL (cast back to JSON text): look for the term as
        # typed and as it appears inside a JSON string.
        variants = dict.fromkeys(
            [
                value,
                json.dumps(value, ensure_ascii=False)[1:-1],
                json.dumps(value)[1:-1],
            ]
        )
        for variant in variants:
            matches |= Q(input_text__icontains=variant) | Q(output_text__icontains=variant)
        return queryset.alias(
            input_text=Cast("input", TextField()), output_text=Cast("output", TextField())
        ).filter(matches)

    def keep(self, queryset, name, value):
        return queryset

    def selected_sort(self) -> str:
        """The ``?sort=`` the form validated (the default order otherwise)."""
        if self.is_bound and self.form.is_valid():
            return self.form.cleaned_data.get("sort") or DEFAULT_SORT
        return DEFAULT_SORT
