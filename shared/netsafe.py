"""Outbound-address safety (SSRF) shared by webhooks and the agent's HTTP tools.

``check_url_literal`` runs when a URL is accepted (binding time): scheme, and literal addresses
in every form the resolver accepts (dotted, decimal ``2130706433``, octal ``0177.0.0.1``, hex,
IPv4-mapped, 6to4 and NAT64 IPv6). ``resolve_checked`` runs at every use: it resolves the host and
refuses unless every address is globally routable, returning the checked address so the caller
connects to exactly that address (a second lookup could be answered differently: DNS rebinding).
"""

from __future__ import annotations

import ipaddress
import socket
from urllib.parse import urlsplit

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class UnsafeTarget(ValueError):
    pass


# IPv6 forms that carry an IPv4 address a gateway will connect to: the IPv4 address decides.
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")  # RFC 6052 well-known prefix
_NAT64_LOCAL = ipaddress.IPv6Network("64:ff9b:1::/48")  # RFC 8215 local use: embedding varies
_IPV4_COMPATIBLE = ipaddress.IPv6Network("::/96")  # deprecated ::a.b.c.d
# Not global per the IANA registry, but Python 3.11's ``is_global`` does not know it yet.
_IETF_PROTOCOL = ipaddress.IPv4Network("192.0.0.0/24")


def _embedded_ipv4(ip: ipaddress.IPv6Address) -> tuple[str, ipaddress.IPv4Address] | None:
    if ip.ipv4_mapped is not None:
        return "IPv4-mapped", ip.ipv4_mapped
    if ip.sixtofour is not None:
        return "6to4", ip.sixtofour
    if ip in _NAT64:
        return "NAT64", ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    if ip in _IPV4_COMPATIBLE and int(ip) > 1:
        return "IPv4-compatible", ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


def _forbidden(ip: IPAddress) -> str | None:
    """Why ``ip`` may not be connected to, or None. The rule is an allow-list: only globally
    routable unicast addresses (IANA special-purpose registries, via ``ipaddress.is_global``);
    shared address space 100.64/10, benchmarking 198.18/15, documentation ranges, ULA, Teredo and
    the like are all refused. Forms that embed an IPv4 address are judged by that address."""
    if isinstance(ip, ipaddress.IPv6Address):
        if ip in _NAT64_LOCAL:
            return "a local-use NAT64 address"
        embedded = _embedded_ipv4(ip)
        if embedded is not None:
            form, v4 = embedded
            why = _forbidden(v4)
            return f"{why} ({form} form of {v4})" if why else None
    for attr, why in (("is_loopback", "loopback"), ("is_private", "private"), ("is_link_local", "link-local"),
                      ("is_multicast", "multicast"), ("is_reserved", "reserved"),
                      ("is_unspecified", "unspecified")):
        if getattr(ip, attr):
            return why
    if not ip.is_global or ip in _IETF_PROTOCOL:
        return "not globally routable"
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
    elif (name := parts.hostname.lower().rstrip(".")) in ("localhost", "localhost.localdomain") or name.endswith(
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
