"""Outbound-address safety (SSRF) shared by webhooks and the agent's HTTP tools.

``check_url_literal`` runs when a URL is accepted (binding time): scheme, and literal addresses
in every form the resolver accepts (dotted, decimal ``2130706433``, octal ``0177.0.0.1``, hex,
IPv4-mapped IPv6). ``resolve_checked`` runs at every use: it resolves the host and refuses if
any address is loopback, private, link-local, multicast, reserved or unspecified, returning the
checked address so the caller connects to exactly that address.
"""

from __future__ import annotations

import ipaddress
import socket
from urllib.parse import urlsplit

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class UnsafeTarget(ValueError):
    pass


def _forbidden(ip: IPAddress) -> str | None:
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return _forbidden(ip.ipv4_mapped)
    for attr, why in (("is_loopback", "loopback"), ("is_private", "private"), ("is_link_local", "link-local"),
                      ("is_multicast", "multicast"), ("is_reserved", "reserved"),
                      ("is_unspecified", "unspecified")):
        if getattr(ip, attr):
            return why
    return None


def literal_address(host: str) -> IPAddress | None:
    """The address a literal host denotes, in any form ``inet_aton`` accepts, else None."""
    h = host.strip("[]")
    try:
        return ipaddress.ip_address(h)
    except ValueError:
        pass
    try:
        return ipaddress.IPv4Address(socket.inet_aton(h))  # decimal, octal, hex, short forms
    except OSError:
        return None


def check_url_literal(url: str, *, allow_private: bool) -> str | None:
    """A refusal reason, or None when the URL may be bound."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return "not a valid URL"
    del port
    if parts.scheme not in ("http", "https"):
        return "scheme must be https" + (" or http" if allow_private else "")
    if parts.scheme == "http" and not allow_private:
        return "scheme must be https"
    if not parts.hostname:
        return "URL has no host"
    if parts.username or parts.password:
        return "credentials in URLs are not allowed"
    if allow_private:
        return None
    ip = literal_address(parts.hostname)
    if ip is not None:
        why = _forbidden(ip)
        if why:
            return f"target address {ip} is {why}"
    elif parts.hostname.lower() in ("localhost", "localhost.localdomain") or parts.hostname.lower().endswith(
            ".localhost"):
        return "target host is loopback"
    return None


def resolve_checked(url: str, *, allow_private: bool) -> tuple[str, int, str]:
    """Resolve and check at use time. Returns (host, port, address to connect to)."""
    reason = check_url_literal(url, allow_private=allow_private)
    if reason:
        raise UnsafeTarget(reason)
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        infos = socket.getaddrinfo(host, port, proto=socket.IPPROTO_TCP)
    except socket.gaierror as exc:
        raise UnsafeTarget(f"cannot resolve {host}: {exc}") from None
    addresses = [ipaddress.ip_address(str(info[4][0]).split("%")[0]) for info in infos]
    if not addresses:
        raise UnsafeTarget(f"{host} has no address")
    if not allow_private:
        for ip in addresses:
            why = _forbidden(ip)
            if why:
                raise UnsafeTarget(f"{host} resolves to {why} address {ip}")
    return host, port, str(addresses[0])
