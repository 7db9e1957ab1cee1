"""
Django admin as the audit console.

Runs, run events and audit entries are read-only for everyone, superusers
included (runs change only through ``runs/lifecycle.py``; a stale admin save
would overwrite a newer status). API tokens never show their secret, not even
the ciphertext, and are added or revoked on the organisation page, which
encrypts and audits. What may be edited here (organisations, members,
presets) is audited like the portal's own pages.

The big tables (runs, events, audit entries) never count every row: the
paginator counts at most ``CappedCountPaginator.cap`` rows, list filters list
what is cheap to list, and the date drill-down reads the first and last date
from the index instead of ``SELECT DISTINCT`` over every row
(``templates/admin/runs/change_list.html``).
"""

import json
from functools import cached_property

from django import forms
from django.contrib import admin
from django.core.paginator import Paginator
from django.db import models, transaction
from django.db.models import Q

from runs.forms import check_json_object, check_json_size
from runs.models import (
    ApiToken,
    AuditAction,
    AuditEntry,
    Membership,
    NotificationSettings,
    Organisation,
    PresetVersion,
    Run,
    RunEvent,
    RunNotification,
    WorkflowPreset,
)
from runs.request_info import client_ip

# --- Large tables -----------------------------------------------------------------------


class AtLeast(int):
    """A row count that stopped at a cap: shows as ``10,000+``."""

    def __str__(self) -> str:
        return f"{int(self) - 1:,}+"


class CappedCountPaginator(Paginator):
    """
    Counts at most ``cap`` + 1 rows (``SELECT COUNT(*) FROM (… LIMIT cap+1)``),
    so a page view costs the same at ten thousand rows and at ten million.
    Page links reach the first ``cap`` rows; filters and the date drill-down
    narrow the rest.
    """

    cap = 10_000

    @cached_property
    def count(self) -> int:
        # Unordered: any cap + 1 rows will do, the database need not sort them.
        count = self.object_list.order_by()[: self.cap + 1].count()
        return AtLeast(count) if count > self.cap else count


class LargeTableAdminMixin:
    paginator = CappedCountPaginator
    # No second COUNT(*) over the whole table for "N of M selected".
    show_full_result_count = False


class ReadOnlyAdminMixin:
    """No add, change or delete for anyone: the rows are append-only records."""

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


# --- Audited writes -----------------------------------------------------------------------


def _jsonable(value):
    if value is None or isinstance(value, str | int | float | bool | dict | list):
        return value
    return str(value)


def _form_changes(form) -> dict:
    changes = {
        name: [_jsonable(form.initial.get(name)), _jsonable(form.cleaned_data.get(name))]
        for name in form.changed_data
    }
    return {name: pair for name, pair in changes.items() if pair[0] != pair[1]}


def _organisation_of(obj) -> Organisation | None:
    return obj if isinstance(obj, Organisation) else getattr(obj, "organisation", None)


def audit_admin_action(request, action: str, obj, changes: dict) -> None:
    AuditEntry.objects.record(
        action=action,
        actor=request.user,
        organisation=_organisation_of(obj),
        target=obj,
        changes={"via": "admin", **changes},
        ip=client_ip(request),
    )


class AuditedAdminMixin:
    """Every save or delete made in this admin writes one audit entry."""

    audit_added: str
    audit_changed: str
    audit_deleted: str | None = None

    def audit_action_for_change(self, obj, form) -> str:
        return self.audit_changed

    def save_model(self, request, obj, form, change):
        with transaction.atomic():
            super().save_model(request, obj, form, change)
            changes = _form_changes(form)
            if not change:
                audit_admin_action(request, self.audit_added, obj, changes)
            elif changes:
                action = self.audit_action_for_change(obj, form)
                audit_admin_action(request, action, obj, changes)

    def delete_model(self, request, obj):
        with transaction.atomic():
            audit_admin_action(request, self.audit_deleted, obj, {"deleted": str(obj)})
            super().delete_model(request, obj)

    def delete_queryset(self, request, queryset):
        # One audited delete per row (the bulk action would skip the audit).
        for obj in queryset:
            self.delete_model(request, obj)


class MembershipInline(admin.TabularInline):
    model = Membership
    extra = 0
    autocomplete_fields = ["user"]


@admin.register(Organisation)
class OrganisationAdmin(AuditedAdminMixin, admin.ModelAdmin):
    list_display = ["name", "slug", "api_base_url", "created_at"]
    search_fields = ["name", "slug"]
    prepopulated_fields = {"slug": ["name"]}
    readonly_fields = ["created_at", "webhook_secret_created_at"]
    inlines = [MembershipInline]
    formfield_overrides = {
        models.URLField: {"form_class": forms.URLField, "assume_scheme": "https"}
    }
    audit_added = AuditAction.ORGANISATION_CREATED
    audit_changed = AuditAction.ORGANISATION_CHANGED

    def has_delete_permission(self, request, obj=None):
        # Runs and audit entries keep their organisation (PROTECT).
        return False

    def save_formset(self, request, form, formset, change):
        if formset.model is not Membership:
            return super().save_formset(request, form, formset, change)
        with transaction.atomic():
            old_roles = {f.instance.pk: f.initial.get("role") for f in formset.initial_forms}
            # Deleted rows are audited while they still exist.
            for membership_form in formset.deleted_forms:
                if membership_form.instance.pk:
                    removed = membership_form.instance
                    _audit_membership(request, AuditAction.MEMBER_REMOVED, removed)
            super().save_formset(request, form, formset, change)
            for membership in formset.new_objects:
                _audit_membership(request, AuditAction.MEMBER_ADDED, membership)
            for membership, fields in formset.changed_objects:
                _audit_membership(
                    request,
                    AuditAction.MEMBER_ROLE_CHANGED,
                    membership,
                    role=[old_roles.get(membership.pk), membership.role],
                    fields=fields,
                )


def _audit_membership(request, action, membership, **extra) -> None:
    changes = {"user": membership.user.get_username(), "role": membership.role, **extra}
    audit_admin_action(request, action, membership, changes)


@admin.register(Membership)
class MembershipAdmin(AuditedAdminMixin, admin.ModelAdmin):
    list_display = ["user", "organisation", "role", "created_at"]
    list_filter = ["role", "organisation"]
    search_fields = ["user__username", "organisation__name"]
    list_select_related = ["user", "organisation"]
    autocomplete_fields = ["user", "organisation"]
    audit_added = AuditAction.MEMBER_ADDED
    audit_changed = AuditAction.MEMBER_ROLE_CHANGED
    audit_deleted = AuditAction.MEMBER_REMOVED


@admin.register(ApiToken)
class ApiTokenAdmin(admin.ModelAdmin):
    # `ciphertext` is deliberately absent from every list and form.
    list_display = [
        "label",
        "hint",
        "organisation",
        "created_by",
        "created_at",
        "revoked_at",
        "rejected_at",
        "last_used_at",
    ]
    list_filter = [
        "organisation",
        ("revoked_at", admin.EmptyFieldListFilter),
        ("rejected_at", admin.EmptyFieldListFilter),
    ]
    search_fields = ["label", "organisation__name"]
    list_select_related = ["organisation", "created_by"]
    fields = list_display
    readonly_fields = list_display

    # Tokens are added, revoked and deleted on the organisation page, which
    # encrypts them and writes the audit entries.
    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


class PresetVersionInline(ReadOnlyAdminMixin, admin.TabularInline):
    model = PresetVersion
    extra = 0
    fields = ["number", "name", "workflow_id", "input", "created_by", "created_at"]
    readonly_fields = fields
    ordering = ["-number"]


class WorkflowPresetAdminForm(forms.ModelForm):
    """
    The admin's preset form: its input obeys the rules of the portal's preset
    form. No ``Meta``: the admin completes it with the model and every field.
    """

    def clean_input(self):
        value = self.cleaned_data["input"]
        check_json_size(len(json.dumps(value).encode()))
        return check_json_object(value)


@admin.register(WorkflowPreset)
class WorkflowPresetAdmin(AuditedAdminMixin, admin.ModelAdmin):
    form = WorkflowPresetAdminForm
    list_display = ["name", "organisation", "workflow_id", "version", "archived", "updated_at"]
    list_filter = ["archived", "organisation"]
    search_fields = ["name", "description", "=workflow_id"]
    list_select_related = ["organisation"]
    readonly_fields = ["version", "created_by", "created_at", "updated_at"]
    inlines = [PresetVersionInline]
    audit_added = AuditAction.PRESET_CREATED
    audit_changed = AuditAction.PRESET_CHANGED

    def audit_action_for_change(self, obj, form):
        if "archived" in form.changed_data and obj.archived:
            return AuditAction.PRESET_ARCHIVED
        return AuditAction.PRESET_CHANGED

    def save_model(self, request, obj, form, change):
        if not change:
            obj.created_by = request.user
        obj.changed_by = request.user  # a content change here is a new version too
        super().save_model(request, obj, form, change)

    def has_delete_permission(self, request, obj=None):
        # Archive instead: past runs keep their preset.
        return False


# --- Runs, events, audit entries (read-only) --------------------------------------------


class RunEventInline(ReadOnlyAdminMixin, admin.TabularInline):
    model = RunEvent
    extra = 0
    fields = ["seq", "from_status", "to_status", "source", "observed_at", "message"]
    readonly_fields = fields
    ordering = ["seq"]


class WorkflowListFilter(admin.SimpleListFilter):
    """The workflows of the presets (cheap), plus whichever workflow is selected."""

    title = "workflow"
    parameter_name = "workflow_id"

    def lookups(self, request, model_admin):
        ids = set(
            WorkflowPreset.objects.order_by().values_list("workflow_id", flat=True).distinct()
        )
        if (selected := self._selected()) is not None:
            ids.add(selected)
        return [(str(workflow_id), str(workflow_id)) for workflow_id in sorted(ids)]

    def _selected(self) -> int | None:
        value = self.value()
        return int(value) if value and value.isdigit() and len(value) < 19 else None

    def queryset(self, request, queryset):
        if self.value() is None:
            return queryset
        selected = self._selected()
        return queryset.filter(workflow_id=selected) if selected else queryset.none()


class MemberListFilter(admin.RelatedFieldListFilter):
    """
    Users who belong to an organisation. Unlike ``RelatedOnlyFieldListFilter``
    (``SELECT DISTINCT triggered_by_id`` over every run) this never scans the
    runs table.
    """

    def field_choices(self, field, request, model_admin):
        return field.get_choices(
            include_blank=False,
            ordering=self.field_admin_ordering(field, request, model_admin),
            limit_choices_to=Q(pk__in=Membership.objects.values("user")),
        )


@admin.register(Run)
class RunAdmin(LargeTableAdminMixin, admin.ModelAdmin):
    list_display = [
        "id",
        "status",
        "organisation",
        "workflow_id",
        "preset",
        "champ_run_id",
        "triggered_by",
        "triggered_at",
        "finished_at",
    ]
    list_filter = [
        "status",
        "organisation",
        WorkflowListFilter,
        ("triggered_by", MemberListFilter),
    ]
    # Only the search box's presence comes from here: see get_search_results.
    search_fields = ["champ_run_id", "workflow_id"]
    search_help_text = "A Champ run ID, workflow ID or portal run ID (exact), or a preset name."
    list_select_related = ["organisation", "preset", "triggered_by"]
    date_hierarchy = "triggered_at"
    inlines = [RunEventInline]
    readonly_fields = [field.name for field in Run._meta.fields]

    def get_queryset(self, request):
        # The list never shows the (possibly large) JSON columns.
        return super().get_queryset(request).defer("input", "output", "preset_input")

    def get_search_results(self, request, queryset, search_term):
        """Numbers match ids exactly (indexed); text matches preset names."""
        term = search_term.strip().lstrip("#")
        if not term:
            return queryset, False
        if term.isdigit():
            number = int(term)
            if number >= 2**63:
                return queryset.none(), False
            return queryset.filter(
                Q(champ_run_id=number) | Q(workflow_id=number) | Q(pk=number)
            ), False
        return queryset.filter(preset__name__icontains=term), False

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


@admin.register(RunEvent)
class RunEventAdmin(LargeTableAdminMixin, ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ["run", "seq", "from_status", "to_status", "source", "observed_at"]
    list_filter = ["source", "to_status"]
    search_fields = ["run__id", "run__champ_run_id"]
    search_help_text = "A portal run ID or Champ run ID (exact)."
    list_select_related = ["run"]
    date_hierarchy = "observed_at"

    def get_search_results(self, request, queryset, search_term):
        term = search_term.strip().lstrip("#")
        if not term:
            return queryset, False
        if not term.isdigit() or int(term) >= 2**63:
            return queryset.none(), False
        return queryset.filter(Q(run_id=int(term)) | Q(run__champ_run_id=int(term))), False


@admin.register(AuditEntry)
class AuditEntryAdmin(LargeTableAdminMixin, ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ["created_at", "actor_label", "action", "organisation", "target_repr", "ip"]
    list_filter = ["action", "organisation"]
    search_fields = ["actor_label", "target_repr", "ip"]
    list_select_related = ["organisation"]
    date_hierarchy = "created_at"


@admin.register(NotificationSettings)
class NotificationSettingsAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    """Each person sets their own on the Notifications page."""

    list_display = ["user", "on_failure", "on_stuck", "email", "updated_at"]
    list_filter = ["on_failure", "on_stuck"]
    search_fields = ["user__username", "email"]
    list_select_related = ["user"]


@admin.register(RunNotification)
class RunNotificationAdmin(LargeTableAdminMixin, ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ["created_at", "kind", "run", "user", "address", "sent_at", "error"]
    list_filter = ["kind", ("sent_at", admin.EmptyFieldListFilter)]
    search_fields = ["user__username", "address"]
    list_select_related = ["run", "user"]
    date_hierarchy = "created_at"
