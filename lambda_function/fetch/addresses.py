"""Which addresses the fetcher may connect to: public unicast only (pure, no I/O).

One explicit table, the same on every Python: no reliance on ``ipaddress``'s ``is_global``
or ``is_private``, whose answers changed between 3.11, 3.12 patch releases and 3.13
(cpython#113171). IPv4 inside IPv6 (mapped, compatible, 6to4, Teredo, NAT64) is unwrapped
and judged as IPv4. Every range of the IANA special-purpose registries is refused, also
the few marked globally reachable (anycast relays, AS112): no image lives there.
"""

from __future__ import annotations

import ipaddress

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

REFUSED_IPV4 = tuple(
    ipaddress.IPv4Network(network)
    for network in (
        "0.0.0.0/8",  # "this network" (RFC 791)
        "10.0.0.0/8",  # private (RFC 1918)
        "100.64.0.0/10",  # shared address space, carrier-grade NAT (RFC 6598)
        "127.0.0.0/8",  # loopback
        "169.254.0.0/16",  # link-local, cloud metadata services (RFC 3927)
        "172.16.0.0/12",  # private
        "192.0.0.0/24",  # IETF protocol assignments: 192.0.0.8, .9, .10, .170/31 ... (RFC 6890)
        "192.0.2.0/24",  # TEST-NET-1 (RFC 5737)
        "192.31.196.0/24",  # AS112-v4 (RFC 7535)
        "192.52.193.0/24",  # AMT (RFC 7450)
        "192.88.99.0/24",  # deprecated 6to4 relay anycast (RFC 7526)
        "192.168.0.0/16",  # private
        "192.175.48.0/24",  # AS112 direct delegation (RFC 7534)
        "198.18.0.0/15",  # benchmarking (RFC 2544)
        "198.51.100.0/24",  # TEST-NET-2
        "203.0.113.0/24",  # TEST-NET-3
        "224.0.0.0/4",  # multicast
        "240.0.0.0/4",  # reserved, and 255.255.255.255 broadcast
    )
)

GLOBAL_UNICAST_IPV6 = ipaddress.IPv6Network("2000::/3")
"""The only IPv6 space allocated for global unicast; everything outside it is refused
(::/8 after unwrapping, 100::/64 discard, fc00::/7 ULA, fe80::/10, fec0::/10, ff00::/8 ...)."""

REFUSED_IPV6 = tuple(
    ipaddress.IPv6Network(network)
    for network in (
        "2001::/23",  # IETF protocol assignments (Teredo 2001::/32 is unwrapped first)
        "2001:db8::/32",  # documentation (RFC 3849)
        "2620:4f:8000::/48",  # AS112 direct delegation (RFC 7534)
        "3fff::/20",  # documentation (RFC 9637)
    )
)

_NAT64 = (ipaddress.IPv6Network("64:ff9b::/96"), ipaddress.IPv6Network("64:ff9b:1::/48"))
_IPV4_COMPATIBLE = ipaddress.IPv6Network("::/96")
_IPV4_MAPPED = ipaddress.IPv6Network("::ffff:0:0/96")
_SIX_TO_FOUR = ipaddress.IPv6Network("2002::/16")
_TEREDO = ipaddress.IPv6Network("2001::/32")


def allowed(address: str, *, allow_loopback: bool = False) -> bool:
    """Whether a connection to ``address`` (a literal) is allowed."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    if allow_loopback and ip.is_loopback:
        return True
    return is_public(ip)


def is_public(ip: IPAddress) -> bool:
    """Whether ``ip`` is a public unicast address, looking inside IPv6 wrappers of IPv4."""
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.scope_id:
            return False
        embedded = embedded_ipv4(ip)
        if embedded is not None:
            return is_public(embedded)
        return ip in GLOBAL_UNICAST_IPV6 and not any(ip in net for net in REFUSED_IPV6)
    return not any(ip in net for net in REFUSED_IPV4)


def embedded_ipv4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address carries (mapped, compatible, 6to4, Teredo, NAT64)."""
    value = int(ip)
    if ip in _IPV4_MAPPED or ip in _IPV4_COMPATIBLE or any(ip in net for net in _NAT64):
        return ipaddress.IPv4Address(value & 0xFFFFFFFF)
    if ip in _SIX_TO_FOUR:
        return ipaddress.IPv4Address((value >> 80) & 0xFFFFFFFF)
    if ip in _TEREDO:  # the client's address, stored inverted in the last 32 bits
        return ipaddress.IPv4Address(~value & 0xFFFFFFFF)
    return None
