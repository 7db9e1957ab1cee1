"""Where a request came from, for the audit log."""

import ipaddress

from django.conf import settings


def client_ip(request) -> str | None:
    """
    The client's IP: ``REMOTE_ADDR``, unless that peer is a configured proxy.

    ``X-Forwarded-For`` is trusted only from ``CHAMP_PORTAL_TRUSTED_PROXIES``,
    and then its right-most address that is not itself a trusted proxy wins.
    """
    remote = request.META.get("REMOTE_ADDR") or None
    proxies = set(settings.CHAMP_PORTAL_TRUSTED_PROXIES)
    if remote and remote in proxies:
        forwarded = request.META.get("HTTP_X_FORWARDED_FOR", "")
        for candidate in reversed([part.strip() for part in forwarded.split(",")]):
            if candidate and candidate not in proxies:
                remote = candidate
                break
    try:
        return ipaddress.ip_address(remote).compressed if remote else None
    except ValueError:
        return None
