"""The `<source>` of socket interfaces (`<interface type='mcast'|'udp'|'server'|'client'>`):
QEMU's `-netdev socket` tunnels the guest's Ethernet frames over a UDP multicast group, a
UDP peer or a TCP connection to another QEMU. No host device and no privileges: the
QEMU process opens the socket itself. libvirt 9.0's element and messages; the QEMU
arguments are in `tapvirt.qemu.argv.interface.socket_netdev`.

* mcast: `<source address='230.0.0.1' port='5558'/>`, a multicast group (QEMU refuses
  any other address, so does tapvirt);
* udp: `<source address= port=><local address= port=/></source>`: QEMU sends to
  address:port from local address:port;
* server: `<source [address=] port=/>`: QEMU listens (on every address without one);
* client: `<source address= port=/>`: QEMU connects to a server.
Addresses are IPv4 (libvirt's schema: `ipv4Addr`), ports 0..65535.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import TYPE_CHECKING

from tapvirt.conf import errors as E
from tapvirt.conf.xmlout import a

if TYPE_CHECKING:
    from lxml import etree

    from tapvirt.conf.xml import Reader

SOCKET_TYPES = ("mcast", "udp", "server", "client")
PORT_MAX = 65535


@dataclass(frozen=True)
class SocketSource:
    address: str | None  # None: a server listening on every address
    port: int
    local_address: str | None = None  # udp: where QEMU sends from
    local_port: int | None = None

    def endpoint(self) -> str:
        """QEMU's host:port (libvirt's "%s:%d", an empty host for an address-less server)."""
        return f"{self.address or ''}:{self.port}"

    def local_endpoint(self) -> str:
        return f"{self.local_address or ''}:{self.local_port}"


def parse_socket_source(
    r: Reader, s: etree._Element | None, itype: str, iface: etree._Element
) -> SocketSource:
    if s is None:
        raise r.fail(
            E.MISSING_SOURCE, iface, f"interface type='{itype}' requires a 'source' element",
            _SOURCE_FIX[itype],
        )
    children = ("local",) if itype == "udp" else ()
    need = ("port",) if itype == "server" else ("address", "port")
    found = r.shape(s, ("address", "port"), children, required_attrs=need)
    address = _ipv4(r, s) if s.get("address") is not None else None
    port = r.uint(s, "port", 0, PORT_MAX)
    if itype == "mcast" and address is not None and not ipaddress.IPv4Address(
            address).is_multicast:
        raise r.fail(
            E.INVALID_VALUE, s, f"mcast address {address} is not a multicast group address "
            "(224.0.0.0/4): QEMU refuses to start with it",
            "use a multicast group such as 230.0.0.1 (239.0.0.0/8 stays on the site)",
            attr="address",
        )
    if itype != "udp":
        return SocketSource(address, port)
    local = r.one(found, "local")
    if local is None:
        raise r.fail(
            E.MISSING_ELEMENT, s, "'<local>' element missing for 'udp' socket interface",
            "add <local address='127.0.0.1' port='5556'/> inside <source>: the address and "
            "port QEMU sends from",
        )
    r.shape(local, ("address", "port"), required_attrs=("address", "port"))
    return SocketSource(address, port, _ipv4(r, local), r.uint(local, "port", 0, PORT_MAX))


_SOURCE_FIX = {
    "mcast": "add <source address='230.0.0.1' port='5558'/> (a multicast group and port)",
    "udp": "add <source address='127.0.0.1' port='5555'><local address='127.0.0.1' "
           "port='5556'/></source>",
    "server": "add <source address='127.0.0.1' port='5558'/> (where QEMU listens)",
    "client": "add <source address='127.0.0.1' port='5558'/> (the server to connect to)",
}


def _ipv4(r: Reader, el: etree._Element) -> str:
    from tapvirt.conf.xml import clip

    raw = el.get("address", "")
    try:
        ipaddress.IPv4Address(raw)
    except ValueError:
        raise r.fail(
            E.INVALID_VALUE, el, f"Invalid value for attribute 'address' in element "
            f"'{el.tag}': '{clip(raw)}'. Expected an IPv4 address",
            "write an IPv4 address such as 127.0.0.1 (libvirt's schema has no host names "
            "or IPv6 here)", attr="address",
        ) from None
    return raw


def format_socket_source(s: SocketSource, ind: str) -> list[str]:
    """libvirt's virDomainNetDefFormat for the socket types."""
    addr = f" address={a(s.address)}" if s.address is not None else ""
    head = f"{ind}<source{addr} port='{s.port}'"
    if s.local_address is None:
        return [head + "/>"]
    return [head + ">",
            f"{ind}  <local address={a(s.local_address)} port='{s.local_port}'/>",
            f"{ind}</source>"]
