"""
Organisation scoping: every lookup of an object by id goes through here.

A non-member gets 404 (the object's existence is not revealed); a member
whose role is too weak gets 403.
"""

from django.core.exceptions import PermissionDenied
from django.http import Http404
from django.shortcuts import get_object_or_404

from runs.models import Membership, Organisation, Role, role_at_least


def get_membership(user, organisation: Organisation) -> Membership | None:
    if not user.is_authenticated:
        return None
    return Membership.objects.filter(user=user, organisation=organisation).first()


def require_role(user, organisation: Organisation, minimum_role: str = Role.VIEWER) -> str:
    """Return ``user``'s role in ``organisation``; 404 for non-members, 403 if too weak."""
    membership = get_membership(user, organisation)
    if membership is None:
        raise Http404("No such organisation.")
    if not role_at_least(membership.role, minimum_role):
        raise PermissionDenied(f"This needs the {minimum_role} role in {organisation}.")
    return membership.role


def get_organisation_for_user(user, slug: str, minimum_role: str = Role.VIEWER):
    """The organisation ``slug`` if ``user`` is a member; its role is set as ``.my_role``."""
    organisation = get_object_or_404(Organisation, slug=slug)
    organisation.my_role = require_role(user, organisation, minimum_role)
    return organisation


def get_scoped_object(queryset, user, minimum_role: str = Role.VIEWER, **lookup):
    """
    Fetch one object of ``queryset`` (which has an ``organisation`` FK) for ``user``.

    404 unless the user is a member of the object's organisation, 403 when
    the role is too weak. The organisation's role is set as ``.my_role``.
    """
    obj = get_object_or_404(queryset.select_related("organisation"), **lookup)
    obj.my_role = require_role(user, obj.organisation, minimum_role)
    return obj
