from django.urls import path

from runs.views import dashboard, hooks, organisations

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
    # Champ's webhook deliveries (CSRF-exempt, authenticated by the org's secret).
    path("hooks/champ/<slug:slug>/", hooks.champ_webhook, name="champ_webhook"),
]
