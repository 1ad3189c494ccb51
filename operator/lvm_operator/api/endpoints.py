"""Which URLs the operator may call: ``spec.prometheus.url`` and ``spec.serve.url``.

Whoever can write an LVMRollout chooses these, and the operator calls them from inside the
cluster with its own network position, so a URL is an SSRF vector. Admission already refuses
anything but ``http(s)://host[:port][/path]`` without userinfo (:data:`.spec.HTTP_URL_PATTERN`);
here the operator refuses, before it connects, hosts that are never a Prometheus or a Ray
dashboard: link-local addresses (169.254.0.0/16 and fe80::/10, where clouds serve instance
metadata and credentials), the unspecified and multicast addresses, and the metadata services'
names, literal or after DNS resolution (so a name that resolves to 169.254.169.254 is refused
too). ``--allow-link-local-endpoints`` (chart: ``operator.allowLinkLocalEndpoints``) lifts the
link-local and metadata refusal for the rare cluster that really serves Prometheus there.

:func:`endpoint_problem` is pure (addresses are passed in); :func:`check_endpoint` resolves.
"""

from __future__ import annotations

import ipaddress
import os
import socket
from collections.abc import Iterable
from urllib.parse import urlsplit

#: Set (to "1") by ``lvm-rollout operator --allow-link-local-endpoints``.
ALLOW_LINK_LOCAL_ENV = "LVM_ALLOW_LINK_LOCAL_ENDPOINTS"

#: Names of cloud instance-metadata services (lower case, no trailing dot).
METADATA_HOSTS = frozenset({
    "metadata", "metadata.google.internal", "metadata.goog", "instance-data",
    "instance-data.ec2.internal", "metadata.azure.internal", "metadata.tencentyun.com",
})


def _address_problem(address: str, allow_link_local: bool) -> tuple[str, str] | None:
    """(the address, what kind it is) when it is refused."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if ip.is_unspecified or ip.is_multicast:
        return str(ip), f"{'an unspecified' if ip.is_unspecified else 'a multicast'} address"
    if ip.is_link_local and not allow_link_local:
        return str(ip), ("a link-local address (where clouds serve instance metadata and "
                         "credentials)")
    return None


def endpoint_problem(url: str, what: str, *, allow_link_local: bool = False,
                     addresses: Iterable[str] = ()) -> str | None:
    """Why the operator must not call ``url`` (``what`` names the field), or None.

    ``addresses``: what the host resolved to (checked like a literal address)."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return f"{what} must be an http:// or https:// URL with a host"
    if parts.username is not None or parts.password is not None:
        return f"{what} must not carry a user or password (put credentials in a Secret)"
    try:
        parts.port  # noqa: B018 - raises on a port out of range
    except ValueError:
        return f"{what} has an invalid port"
    host = parts.hostname.lower().rstrip(".")
    fix = (" Point it at the service's cluster address, or start the operator with "
           "--allow-link-local-endpoints if this cluster really serves it there.")
    if host in METADATA_HOSTS and not allow_link_local:
        return f"{what} names {host!r}, a cloud metadata service: refused." + fix
    for address in (host, *addresses):
        problem = _address_problem(address, allow_link_local)
        if problem is not None:
            ip, kind = problem
            said = f"{ip} is {kind}" if address == host else f"{host!r} resolves to {ip}, {kind}"
            return f"{what}: {said}: refused." + fix
    return None


def link_local_allowed() -> bool:
    return os.environ.get(ALLOW_LINK_LOCAL_ENV, "") in ("1", "true", "yes")


def check_endpoint(url: str, what: str) -> str | None:
    """:func:`endpoint_problem` with the host resolved and the operator's flag applied.

    A name that does not resolve is not refused here: connecting fails and says so."""
    host = urlsplit(url).hostname or ""
    try:
        infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP) if host else []
    except (OSError, UnicodeError):
        infos = []
    addresses = sorted({str(info[4][0]) for info in infos})
    return endpoint_problem(url, what, allow_link_local=link_local_allowed(),
                            addresses=addresses)
