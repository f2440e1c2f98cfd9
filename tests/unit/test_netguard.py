"""Webhook targets: only public addresses, in every spelling. Nothing here sends a request;
names are resolved by a stand-in resolver, except 'localhost' (the hosts file)."""

from __future__ import annotations

import pytest

from app.core.netguard import UnsafeTarget, check_url, parse_allowed, resolve


def fixed(mapping: dict[str, list[str]]):  # type: ignore[no-untyped-def]
    def resolver(host: str) -> list[str]:
        if host not in mapping:
            raise UnsafeTarget(f"the host '{host}' does not resolve")
        return mapping[host]

    return resolver


REFUSED = [
    "http://127.0.0.1/hook",
    "http://127.1.2.3:8080/",
    "http://0.0.0.0/",
    "http://10.0.0.5/",
    "http://172.16.1.1/",
    "http://172.31.255.255/",
    "http://192.168.1.10/",
    "http://100.64.0.1/",  # carrier-grade NAT
    "http://169.254.169.254/latest/meta-data/",  # cloud metadata (link-local)
    "http://[::1]/",
    "http://[::]/",
    "http://[fe80::1]/",  # link-local
    "http://[fc00::1]/",  # unique local
    "http://[fd00:ec2::254]/",  # AWS metadata over IPv6
    "http://[::ffff:127.0.0.1]/",  # IPv4-mapped loopback
    "http://[::ffff:169.254.169.254]/",
    "http://[2002:a9fe:a9fe::1]/",  # 6to4 wrapping 169.254.169.254
    "http://[64:ff9b::a00:1]/",  # NAT64 wrapping 10.0.0.1
    "http://224.0.0.1/",  # multicast
    "http://240.0.0.1/",  # reserved
    "http://255.255.255.255/",
]


@pytest.mark.parametrize("url", REFUSED)
def test_non_public_literal_addresses_are_refused(url: str) -> None:
    with pytest.raises(UnsafeTarget, match="not a public address"):
        check_url(url, [], resolver=lambda host: [host])


def test_public_addresses_pass() -> None:
    assert check_url("https://93.184.215.14/hook", [], resolver=lambda h: [h])
    assert check_url("http://[2606:4700::6810:84e5]/", [], resolver=lambda h: [h])


def test_names_are_judged_by_every_address_they_resolve_to() -> None:
    resolver = fixed(
        {
            "hooks.example.com": ["93.184.215.14"],
            "sneaky.example.com": ["93.184.215.14", "10.1.2.3"],  # one private answer is enough
            "rebind.example.com": ["169.254.169.254"],
        }
    )
    assert check_url("https://hooks.example.com/x", [], resolver) == ["93.184.215.14"]
    for host in ("sneaky.example.com", "rebind.example.com"):
        with pytest.raises(UnsafeTarget, match="not a public address"):
            check_url(f"https://{host}/x", [], resolver)
    with pytest.raises(UnsafeTarget, match="does not resolve"):
        check_url("https://nowhere.example.com/", [], resolver)


def test_localhost_resolves_to_loopback_and_is_refused() -> None:
    with pytest.raises(UnsafeTarget, match="not a public address"):
        check_url("http://localhost:8000/hook", [])


def test_operators_can_allow_named_hosts_and_networks() -> None:
    resolver = fixed({"hooks.internal": ["10.1.2.3"], "other.internal": ["10.9.9.9"]})
    allow = parse_allowed(" hooks.internal , 192.168.0.0/16,127.0.0.1")
    assert check_url("http://hooks.internal/x", allow, resolver)
    assert check_url("http://192.168.4.4/x", allow, lambda h: [h])
    assert check_url("http://127.0.0.1:9/x", allow, lambda h: [h])
    for url in ("http://other.internal/x", "http://127.0.0.2/x", "http://[::1]/x"):
        with pytest.raises(UnsafeTarget):
            check_url(url, allow, resolver if "internal" in url else (lambda h: [h]))


@pytest.mark.parametrize(
    "url",
    [
        "ftp://93.184.215.14/",
        "http:///nohost",
        "http://user:pw@93.184.215.14/",
        "https://0\u008cW[\u00e1X/",  # an unbalanced "[": urlsplit raises (found by fuzzing)
    ],
)
def test_malformed_urls_are_refused(url: str) -> None:
    with pytest.raises(UnsafeTarget):
        check_url(url, [], resolver=lambda h: [h])


def test_names_that_cannot_be_looked_up_are_refused_before_any_lookup() -> None:
    # CPython refuses an embedded NUL before it calls getaddrinfo: nothing is sent.
    with pytest.raises(UnsafeTarget):
        resolve("bad\x00host")
