"""X-Forwarded-For / -Proto / -Host, believed only when the peer is a trusted proxy.

Behind a reverse proxy the TCP peer is the proxy; the client's address and the scheme and
host it used arrive in headers that anyone can also forge. So they are read only when the
connection comes from a configured proxy address, and the client is the right-most
X-Forwarded-For hop that is not itself a trusted proxy (hops to its left were written by
parties we do not trust). Proto and host are taken from the nearest proxy (the right-most
value) and must look like a scheme and a host, or they are ignored.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable
from dataclasses import dataclass

Network = ipaddress.IPv4Network | ipaddress.IPv6Network

_HOST = re.compile(r"^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]{1,253})(:[0-9]{1,5})?$")


@dataclass(frozen=True, slots=True)
class Origin:
    """Where a request really came from and how it was addressed."""

    client: str | None
    scheme: str
    host: str | None  # "host[:port]" the client used; None: keep the request's own


class TrustedProxies:
    def __init__(self, networks: Iterable[str]) -> None:
        self.networks: tuple[Network, ...] = tuple(
            ipaddress.ip_network(n.strip(), strict=False) for n in networks)

    def __bool__(self) -> bool:
        return bool(self.networks)

    def trusts(self, address: str | None) -> bool:
        if not address or not self.networks:
            return False
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        return any(ip in net for net in self.networks)

    def resolve(self, peer: str | None, scheme: str, forwarded_for: str | None,
                proto: str | None, host: str | None) -> Origin:
        """The request's real origin given its peer and its X-Forwarded-* values."""
        if not self.trusts(peer):
            return Origin(peer, scheme, None)
        return Origin(self._client(peer, forwarded_for), _proto(proto) or scheme, _host(host))

    def _client(self, peer: str | None, forwarded_for: str | None) -> str | None:
        if not forwarded_for:
            return peer
        hops = [h.strip() for h in forwarded_for.split(",")]
        for hop in reversed(hops):
            address = _address(hop)
            if address is None:
                return peer  # a malformed hop: stop believing the chain there
            if not self.trusts(address):
                return address
        return _address(hops[0]) or peer  # every hop is a proxy: the left-most one


def _last(value: str | None) -> str | None:
    if not value:
        return None
    return value.rsplit(",", 1)[-1].strip() or None


def _proto(value: str | None) -> str | None:
    proto = (_last(value) or "").lower()
    return proto if proto in ("http", "https") else None


def _host(value: str | None) -> str | None:
    host = _last(value)
    return host if host and _HOST.match(host) else None


def _address(hop: str) -> str | None:
    """An IP from an X-Forwarded-For hop ("1.2.3.4", "[::1]:80", "1.2.3.4:5678")."""
    text = hop.strip()
    if text.startswith("["):
        text = text[1:].split("]", 1)[0]
    elif text.count(":") == 1:
        text = text.split(":", 1)[0]
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        return None
