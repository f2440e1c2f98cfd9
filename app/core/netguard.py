"""Where the service may send a tenant-chosen request (webhooks): public addresses only.

A webhook URL is chosen by a tenant but fetched by the service, from inside its network: without
a check, a tenant could make it POST to the service's own Redis, to other hosts on the private
network, or to a cloud metadata endpoint (169.254.169.254, fd00:ec2::254). So a target must
resolve only to globally routable addresses; loopback, private (RFC 1918, unique-local IPv6),
carrier-grade NAT, link-local, multicast, reserved and unspecified addresses are refused, in
any spelling (IPv4-mapped IPv6, 6to4 and NAT64 forms included), unless an operator names the
host or network in FINETUNE_WEBHOOK_ALLOWED_HOSTS. The API checks at submission (422) and the
sender checks again, on the addresses the name resolves to then, right before each attempt.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable, Iterable
from urllib.parse import urlsplit

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolver = Callable[[str], list[str]]
# NAT64's well-known prefix embeds an IPv4 address in the low 32 bits.
NAT64 = ipaddress.IPv6Network("64:ff9b::/96")


class UnsafeTarget(ValueError):
    """The URL would make the service send a request where it must not."""


def resolve(host: str) -> list[str]:
    """Every address the name resolves to (a literal address resolves to itself)."""
    try:
        infos = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError, ValueError) as exc:  # gaierror is an OSError
        raise UnsafeTarget(f"the host '{host}' does not resolve ({exc})") from exc
    return sorted({str(info[4][0]) for info in infos})


def embedded_ipv4(address: Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 one stands for (mapped, 6to4, NAT64), if any."""
    if isinstance(address, ipaddress.IPv4Address):
        return None
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address in NAT64:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None


def is_public(address: Address) -> bool:
    inner = embedded_ipv4(address)
    if inner is not None and not is_public(inner):
        return False
    return address.is_global and not address.is_multicast


def parse_allowed(raw: str) -> list[str]:
    return [part.strip().lower() for part in raw.split(",") if part.strip()]


def allowed(host: str, addresses: Iterable[Address], allow: list[str]) -> bool:
    """An operator's exception: the host name itself, or every address in a listed network."""
    if host.lower() in allow:
        return True
    networks = []
    for entry in allow:
        try:
            networks.append(ipaddress.ip_network(entry, strict=False))
        except ValueError:
            continue  # a host name
    addresses = list(addresses)
    return bool(addresses) and all(any(a in n for n in networks) for a in addresses)


def check_url(url: str, allow: list[str], resolver: Resolver = resolve) -> list[str]:
    """Raise UnsafeTarget unless every address `url`'s host resolves to may be sent to; returns
    those addresses."""
    try:
        parts = urlsplit(url)
    except ValueError as exc:  # e.g. an unbalanced "[" in the host
        raise UnsafeTarget(f"the URL is not valid: {exc}") from exc
    if parts.scheme not in ("http", "https"):
        raise UnsafeTarget("the URL must start with http:// or https://")
    host = parts.hostname
    if not host:
        raise UnsafeTarget("the URL has no host")
    try:
        parts.port  # noqa: B018  (raises on a malformed port)
    except ValueError as exc:
        raise UnsafeTarget(f"the URL's port is not valid: {exc}") from exc
    if parts.username or parts.password:
        raise UnsafeTarget("the URL must not carry credentials")
    names = resolver(host)
    addresses = [ipaddress.ip_address(name.split("%")[0]) for name in names]
    if allowed(host, addresses, allow):
        return names
    refused = [str(a) for a in addresses if not is_public(a)]
    if refused or not addresses:
        raise UnsafeTarget(
            f"the host '{host}' resolves to {', '.join(refused) or 'nothing'}: not a public "
            "address (loopback, private, link-local and metadata addresses are refused; an "
            "operator can allow a host with FINETUNE_WEBHOOK_ALLOWED_HOSTS)"
        )
    return names
