"""Organisation pages: list, create, members and roles, tokens, webhook secret."""

from django.contrib import messages
from django.db.models import Count, Q
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.views.decorators.debug import sensitive_post_parameters, sensitive_variables
from django.views.decorators.http import require_POST

from runs import organisations as org_actions
from runs.access import get_organisation_for_user
from runs.forms import MemberAddForm, MemberRoleForm, OrganisationForm, TokenForm
from runs.models import ApiToken, Membership, Organisation, Role, role_at_least
from runs.request_info import client_ip


def organisation_list(request: HttpRequest) -> HttpResponse:
    organisations = (
        Organisation.objects.for_user(request.user)
        .annotate(
            member_count=Count("memberships", distinct=True),
            active_token_count=Count(
                "tokens",
                filter=Q(tokens__revoked_at__isnull=True, tokens__rejected_at__isnull=True),
                distinct=True,
            ),
        )
        .order_by("name")
    )
    roles = dict(
        Membership.objects.filter(user=request.user).values_list("organisation_id", "role")
    )
    for organisation in organisations:
        organisation.my_role = roles.get(organisation.pk)
    return render(request, "runs/organisation_list.html", {"organisations": organisations})


def organisation_create(request: HttpRequest) -> HttpResponse:
    form = OrganisationForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        organisation = org_actions.organisation_create(
            **form.cleaned_data, user=request.user, ip=client_ip(request)
        )
        messages.success(request, f"Organisation “{organisation}” created. Add an API token next.")
        return redirect(organisation)
    return render(request, "runs/organisation_form.html", {"form": form})


def organisation_detail(request: HttpRequest, slug: str) -> HttpResponse:
    organisation = get_organisation_for_user(request.user, slug)
    is_admin = role_at_least(organisation.my_role, Role.ADMIN)
    context = {
        "organisation": organisation,
        "is_admin": is_admin,
        "memberships": organisation.memberships.select_related("user").order_by("user__username"),
        "tokens": organisation.tokens.select_related("created_by").order_by(
            "revoked_at", "-created_at"
        ),
        "token_form": TokenForm(),
        "member_form": MemberAddForm(organisation=organisation),
        "roles": Role.choices,
        "webhook_url": _webhook_url(request, organisation),
    }
    return render(request, "runs/organisation_detail.html", context)


def organisation_edit(request: HttpRequest, slug: str) -> HttpResponse:
    organisation = get_organisation_for_user(request.user, slug, Role.ADMIN)
    form = OrganisationForm(request.POST or None, instance=organisation)
    if request.method == "POST" and form.is_valid():
        org_actions.organisation_update(form=form, user=request.user, ip=client_ip(request))
        messages.success(request, "Organisation saved.")
        return redirect(form.instance)
    return render(
        request, "runs/organisation_form.html", {"form": form, "organisation": organisation}
    )


# The token is in the POST body and in the locals of every frame below this
# view (form, crypto): an error report (mail_admins) must carry neither.
@sensitive_post_parameters("secret")
@sensitive_variables()
@require_POST
def token_add(request: HttpRequest, slug: str) -> HttpResponse:
    organisation = get_organisation_for_user(request.user, slug, Role.ADMIN)
    form = TokenForm(request.POST)
    if form.is_valid():
        token = org_actions.token_add(
            organisation=organisation,
            label=form.cleaned_data["label"],
            secret=form.cleaned_data["secret"],
            user=request.user,
            ip=client_ip(request),
        )
        messages.success(request, f"Token “{token.label}” saved as {token.hint}.")
        return redirect(organisation)
    messages.error(request, "The token was not saved: " + _first_error(form))
    return redirect(organisation)


@require_POST
def token_revoke(request: HttpRequest, slug: str, token_id: int) -> HttpResponse:
    organisation = get_organisation_for_user(request.user, slug, Role.ADMIN)
    token = get_object_or_404(ApiToken, pk=token_id, organisation=organisation)
    org_actions.token_revoke(token=token, user=request.user, ip=client_ip(request))
    messages.success(request, f"Token “{token.label}” ({token.hint}) revoked.")
    return redirect(organisation)


@require_POST
def token_delete(request: HttpRequest, slug: str, token_id: int) -> HttpResponse:
    organisation = get_organisation_for_user(request.user, slug, Role.ADMIN)
    token = get_object_or_404(ApiToken, pk=token_id, organisation=organisation)
    org_actions.token_delete(token=token, user=request.user, ip=client_ip(request))
    messages.success(request, f"Token “{token.label}” ({token.hint}) deleted.")
    return redirect(organisation)


@require_POST
def member_add(request: HttpRequest, slug: str) -> HttpResponse:
    organisation = get_organisation_for_user(request.user, slug, Role.ADMIN)
    form = MemberAddForm(request.POST, organisation=organisation)
    if form.is_valid():
        org_actions.member_add(
            organisation=organisation,
            member=form.member,
            role=form.cleaned_data["role"],
            user=request.user,
            ip=client_ip(request),
        )
        messages.success(request, f"{form.member.get_username()} added.")
    else:
        messages.error(request, "The member was not added: " + _first_error(form))
    return redirect(organisation)


@require_POST
def member_role(request: HttpRequest, slug: str, membership_id: int) -> HttpResponse:
    organisation = get_organisation_for_user(request.user, slug, Role.ADMIN)
    membership = get_object_or_404(Membership, pk=membership_id, organisation=organisation)
    form = MemberRoleForm(request.POST)
    if not form.is_valid():
        messages.error(request, "Choose a valid role.")
    elif form.cleaned_data["role"] != Role.ADMIN and org_actions.is_last_admin(membership):
        messages.error(request, "An organisation needs at least one admin.")
    else:
        org_actions.member_change_role(
            membership=membership,
            role=form.cleaned_data["role"],
            user=request.user,
            ip=client_ip(request),
        )
        messages.success(request, f"{membership.user.get_username()} is now {membership.role}.")
    return redirect(organisation)


@require_POST
def member_remove(request: HttpRequest, slug: str, membership_id: int) -> HttpResponse:
    organisation = get_organisation_for_user(request.user, slug, Role.ADMIN)
    membership = get_object_or_404(Membership, pk=membership_id, organisation=organisation)
    if org_actions.is_last_admin(membership):
        messages.error(request, "An organisation needs at least one admin.")
    else:
        org_actions.member_remove(membership=membership, user=request.user, ip=client_ip(request))
        messages.success(request, f"{membership.user.get_username()} removed.")
    return redirect(organisation)


@sensitive_variables("secret")
@require_POST
def webhook_secret_create(request: HttpRequest, slug: str) -> HttpResponse:
    organisation = get_organisation_for_user(request.user, slug, Role.ADMIN)
    secret = org_actions.webhook_secret_create(
        organisation=organisation, user=request.user, ip=client_ip(request)
    )
    # Rendered straight into this POST's response: the secret is never stored
    # in clear anywhere (not even in the session) and cannot be shown again.
    return render(
        request,
        "runs/webhook_secret_created.html",
        {
            "organisation": organisation,
            "secret": secret,
            "webhook_url": _webhook_url(request, organisation),
        },
    )


def _webhook_url(request: HttpRequest, organisation: Organisation) -> str:
    return request.build_absolute_uri(reverse("champ_webhook", args=[organisation.slug]))


def _first_error(form) -> str:
    for errors in form.errors.values():
        return str(errors[0])
    return "please check the form."
