"""
Django admin as the audit console.

Run events and audit entries are read-only for everyone, superusers included;
API tokens never show their secret (not even the ciphertext).
"""

from django import forms
from django.contrib import admin
from django.db import models

from runs.models import (
    ApiToken,
    AuditEntry,
    Membership,
    Organisation,
    Run,
    RunEvent,
    WorkflowPreset,
)


class ReadOnlyAdminMixin:
    """No add, change or delete for anyone: the rows are append-only records."""

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


class MembershipInline(admin.TabularInline):
    model = Membership
    extra = 0
    autocomplete_fields = ["user"]


@admin.register(Organisation)
class OrganisationAdmin(admin.ModelAdmin):
    list_display = ["name", "slug", "api_base_url", "created_at"]
    search_fields = ["name", "slug"]
    prepopulated_fields = {"slug": ["name"]}
    readonly_fields = ["created_at", "webhook_secret_created_at"]
    inlines = [MembershipInline]
    formfield_overrides = {
        models.URLField: {"form_class": forms.URLField, "assume_scheme": "https"}
    }


@admin.register(Membership)
class MembershipAdmin(admin.ModelAdmin):
    list_display = ["user", "organisation", "role", "created_at"]
    list_filter = ["role", "organisation"]
    search_fields = ["user__username", "organisation__name"]
    list_select_related = ["user", "organisation"]
    autocomplete_fields = ["user", "organisation"]


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
    fields = [
        "organisation",
        "label",
        "hint",
        "created_by",
        "created_at",
        "revoked_at",
        "rejected_at",
        "last_used_at",
    ]
    readonly_fields = [
        "organisation",
        "hint",
        "created_by",
        "created_at",
        "rejected_at",
        "last_used_at",
    ]

    def has_add_permission(self, request):
        # Tokens are added from the organisation page, which encrypts them.
        return False


@admin.register(WorkflowPreset)
class WorkflowPresetAdmin(admin.ModelAdmin):
    list_display = ["name", "organisation", "workflow_id", "archived", "updated_at"]
    list_filter = ["archived", "organisation"]
    search_fields = ["name", "description", "=workflow_id"]
    list_select_related = ["organisation"]
    readonly_fields = ["created_by", "created_at", "updated_at"]


class RunEventInline(ReadOnlyAdminMixin, admin.TabularInline):
    model = RunEvent
    extra = 0
    fields = ["seq", "from_status", "to_status", "source", "observed_at", "message"]
    readonly_fields = fields
    ordering = ["seq"]


@admin.register(Run)
class RunAdmin(admin.ModelAdmin):
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
    list_filter = ["status", "organisation", "triggered_by"]
    search_fields = ["=champ_run_id", "=workflow_id", "preset__name"]
    list_select_related = ["organisation", "preset", "triggered_by"]
    date_hierarchy = "triggered_at"
    # No COUNT(*) over the whole table on every page view.
    show_full_result_count = False
    inlines = [RunEventInline]
    readonly_fields = [field.name for field in Run._meta.fields]

    def has_add_permission(self, request):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


@admin.register(RunEvent)
class RunEventAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ["run", "seq", "from_status", "to_status", "source", "observed_at"]
    list_filter = ["source", "to_status"]
    search_fields = ["=run__id", "=run__champ_run_id"]
    list_select_related = ["run"]
    date_hierarchy = "observed_at"
    show_full_result_count = False


@admin.register(AuditEntry)
class AuditEntryAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ["created_at", "actor_label", "action", "organisation", "target_repr", "ip"]
    list_filter = ["action", "organisation"]
    search_fields = ["actor_label", "target_repr", "ip"]
    list_select_related = ["organisation"]
    date_hierarchy = "created_at"
    show_full_result_count = False
