from django.urls import path

from runs.views import account, compare, dashboard, history, hooks, organisations, presets, runs

urlpatterns = [
    path("", dashboard.dashboard, name="dashboard"),
    # Organisations, members, tokens.
    path("orgs/", organisations.organisation_list, name="organisation_list"),
    path("orgs/new/", organisations.organisation_create, name="organisation_create"),
    path("orgs/<slug:slug>/", organisations.organisation_detail, name="organisation_detail"),
    path("orgs/<slug:slug>/edit/", organisations.organisation_edit, name="organisation_edit"),
    path("orgs/<slug:slug>/tokens/", organisations.token_add, name="token_add"),
    path(
        "orgs/<slug:slug>/tokens/<int:token_id>/revoke/",
        organisations.token_revoke,
        name="token_revoke",
    ),
    path(
        "orgs/<slug:slug>/tokens/<int:token_id>/delete/",
        organisations.token_delete,
        name="token_delete",
    ),
    path("orgs/<slug:slug>/members/", organisations.member_add, name="member_add"),
    path(
        "orgs/<slug:slug>/members/<int:membership_id>/role/",
        organisations.member_role,
        name="member_role",
    ),
    path(
        "orgs/<slug:slug>/members/<int:membership_id>/remove/",
        organisations.member_remove,
        name="member_remove",
    ),
    path(
        "orgs/<slug:slug>/webhook-secret/",
        organisations.webhook_secret_create,
        name="webhook_secret_create",
    ),
    # Presets and starting runs.
    path("presets/", presets.preset_list, name="preset_list"),
    path("presets/new/", presets.preset_create, name="preset_create"),
    path("presets/<int:pk>/", presets.preset_detail, name="preset_detail"),
    path("presets/<int:pk>/edit/", presets.preset_edit, name="preset_edit"),
    path("presets/<int:pk>/archive/", presets.preset_archive, name="preset_archive"),
    path("presets/<int:pk>/unarchive/", presets.preset_unarchive, name="preset_unarchive"),
    path("presets/<int:pk>/run/", presets.preset_run, name="preset_run"),
    path("presets/<int:pk>/versions/", presets.preset_versions, name="preset_versions"),
    # Run history and its exports (the filtered set).
    path("runs/", history.run_list, name="run_list"),
    path("runs/export.csv", history.run_export_csv, name="run_export_csv"),
    path("runs/export.json", history.run_export_json, name="run_export_json"),
    path("runs/new/", runs.run_create, name="run_create"),
    path("runs/compare/", compare.run_compare, name="run_compare"),
    path("runs/active/", dashboard.active_runs, name="active_runs"),
    path("runs/<int:pk>/", runs.run_detail, name="run_detail"),
    path("runs/<int:pk>/live/", runs.run_live, name="run_live"),
    path("runs/<int:pk>/again/", runs.run_again, name="run_again"),
    path("runs/<int:pk>/save-preset/", runs.run_save_preset, name="run_save_preset"),
    # My account.
    path(
        "account/notifications/",
        account.notification_settings,
        name="notification_settings",
    ),
    # Champ's webhook deliveries (CSRF-exempt, authenticated by the org's secret).
    path("hooks/champ/<slug:slug>/", hooks.champ_webhook, name="champ_webhook"),
]
