"""`<channel>` (virtio-serial ports: the QEMU guest agent, SPICE's vdagent, your own) and
`<redirdev>` (SPICE USB redirection), libvirt 9.0's elements. QEMU arguments:
`tapvirt.qemu.argv.channel`.

A UNIX channel without a path listens on a socket tapvirt makes in the guest's runtime
directory at start, named after the port (libvirt's qemuDomainPrepareChannel), so
`<channel type='unix'><target type='virtio' name='org.qemu.guest_agent.0'/></channel>`
works as virt-install writes it. SPICE channels need a SPICE display; guestfwd channels
(user networking's forwarding to a host chardev) and USB redirection over TCP are refused.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING

from tapvirt.conf import errors as E
from tapvirt.conf.addresses import AddressType, UsbAddress, VirtioSerialAddress
from tapvirt.conf.devices.common import address_lines, parse_device_address, parse_usb_device
from tapvirt.errors import define

if TYPE_CHECKING:
    from lxml import etree

    from tapvirt.conf.xml import Reader

CHANNEL_UNSUPPORTED = define(
    "channel-unsupported",
    "a <channel> or <redirdev> kind tapvirt cannot connect (guestfwd, qemu-vdagent, tcp, ...)",
    layer="conf",
)
SPICE_NEEDED = define(
    "spice-needed", "a spicevmc channel or USB redirection without a SPICE <graphics>",
    layer="conf",
)
GUEST_AGENT = "org.qemu.guest_agent.0"
SPICE_AGENT = "com.redhat.spice.0"  # libvirt's name for a spicevmc channel without one
PORT_NAME_RE = re.compile(r"[A-Za-z0-9_.\-]{1,128}\Z")


class ChannelType(StrEnum):
    UNIX = "unix"
    PTY = "pty"
    SPICEVMC = "spicevmc"


@dataclass(frozen=True)
class Channel:
    type: ChannelType
    name: str | None = None  # the virtio-serial port name the guest sees
    path: str | None = None  # unix: None = <runtime dir>/<name> at start
    listen: bool = True  # unix: <source mode='bind'> (QEMU listens) or 'connect'
    alias: str | None = None
    address: VirtioSerialAddress | None = None  # its virtio-serial port (assigned)

    @property
    def guest_agent(self) -> bool:
        return self.name == GUEST_AGENT


def parse_channel(p: Reader, el: etree._Element, index: int) -> Channel:
    from tapvirt.conf.devices.common import parse_alias as _alias

    raw = el.get("type")
    if raw in ("qemu-vdagent", "dbus", "spiceport", "tcp", "udp", "file", "null", "vc",
               "stdio", "dev", "pipe", "nmdm"):
        raise p.fail(
            CHANNEL_UNSUPPORTED, el, f"channel type '{raw}' is not supported by tapvirt",
            "use type='unix' (a socket), 'pty' or 'spicevmc'", attr="type",
        )
    found = p.shape(el, ("type",), ("source", "target", "alias", "address"),
                    required_attrs=("type",))
    ctype = p.enum(el, "type", ChannelType)
    target = p.need(found, "target", el)
    ttype = target.get("type")
    if ttype != "guestfwd":
        p.shape(target, ("type", "name"), required_attrs=("type",))
    if ttype == "guestfwd":
        raise p.fail(
            CHANNEL_UNSUPPORTED, target, "guestfwd channels forward a guest address of user "
            "networking to a host chardev; tapvirt does not support them",
            "use a virtio channel: <target type='virtio' name='...'/>", attr="type",
        )
    if ttype != "virtio":
        raise p.fail(
            E.INVALID_VALUE, target, f"Invalid value for attribute 'type' in element "
            f"'target': '{(ttype or '')[:40]}'.", "use type='virtio'", attr="type",
        )
    name = target.get("name")
    if name is not None and not PORT_NAME_RE.match(name):
        raise p.fail(
            E.INVALID_VALUE, target, f"channel name {name[:40]!r} is not a virtio-serial port "
            "name", "use 1-128 of A-Z a-z 0-9 _ . - (e.g. org.qemu.guest_agent.0)", attr="name",
        )
    if ctype is ChannelType.SPICEVMC and name is None:
        name = SPICE_AGENT
    path, listen = None, True
    s = p.one(found, "source")
    if ctype is ChannelType.UNIX:
        if s is not None:
            p.shape(s, ("mode", "path"))
            mode = s.get("mode", "connect")
            if mode not in ("bind", "connect"):
                raise p.fail(
                    E.INVALID_VALUE, s, f"Invalid value for attribute 'mode' in element "
                    f"'source': '{mode[:40]}'.", "use mode='bind' or mode='connect'",
                    attr="mode",
                )
            # without a path libvirt makes the socket itself, which implies mode='bind'
            if s.get("path") is not None:
                path = p.abspath(s, "path", s.get("path", ""))
                listen = mode == "bind"
    elif s is not None:
        raise p.fail(
            E.NOT_FOR_TYPE, s, f"a channel of type '{ctype}' takes no <source>",
            "remove <source>",
        )
    address = parse_device_address(p, p.one(found, "address"),
                                   (AddressType.VIRTIO_SERIAL,), "a virtio channel")
    assert address is None or isinstance(address, VirtioSerialAddress)
    return Channel(ctype, name, path, listen,
                   _alias(p, p.one(found, "alias"), f"channel{index}"), address)


def format_channel(c: Channel, ind: str, live: bool) -> list[str]:
    from tapvirt.conf.devices.misc import _alias_lines
    from tapvirt.conf.xmlout import a as _a
    from tapvirt.conf.xmlout import attrs as _attrs

    out = [f"{ind}<channel type={_a(c.type)}>"]
    if c.type is ChannelType.UNIX:
        out.append(f"{ind}  <source mode={_a('bind' if c.listen else 'connect')}"
                   + _attrs(path=c.path) + "/>")
    out.append(f"{ind}  <target type='virtio'" + _attrs(name=c.name) + "/>")
    out += _alias_lines(c.alias, ind, live) + address_lines(c.address, ind)
    out.append(f"{ind}</channel>")
    return out


def channel_socket(c: Channel, runtime_dir: str) -> str | None:
    """The socket a UNIX channel uses: its path, or the one tapvirt makes at start."""
    if c.type is not ChannelType.UNIX:
        return None
    if c.path is not None:
        return c.path
    return f"{runtime_dir}/{c.name or c.alias or 'channel'}.sock"


# --- redirdev -------------------------------------------------------------------------


@dataclass(frozen=True)
class Redirdev:
    """`<redirdev bus='usb' type='spicevmc'/>`: a USB device of the SPICE client."""

    alias: str | None = None
    address: UsbAddress | None = None  # its USB port (assigned)


def parse_redirdev(p: Reader, el: etree._Element, index: int) -> Redirdev:
    if el.get("type") not in (None, "spicevmc"):
        raise p.fail(
            CHANNEL_UNSUPPORTED, el, f"USB redirection of type '{el.get('type', '')[:40]}' "
            "is not supported by tapvirt", "use type='spicevmc' with a SPICE display",
            attr="type",
        )
    # libvirt's C parser defaults bus to usb, its schema requires it: so does tapvirt
    found = p.shape(el, ("bus", "type"), ("alias", "address"),
                    required_attrs=("bus", "type"))
    if el.get("bus") != "usb":
        raise p.fail(
            E.INVALID_VALUE, el, f"Invalid value for attribute 'bus' in element 'redirdev': "
            f"'{el.get('bus', '')[:40]}'.", "use bus='usb'", attr="bus",
        )
    if el.get("type") != "spicevmc":
        raise p.fail(
            CHANNEL_UNSUPPORTED, el, f"USB redirection of type '{el.get('type', '')[:40]}' "
            "is not supported by tapvirt", "use type='spicevmc' with a SPICE display",
            attr="type",
        )
    return Redirdev(*parse_usb_device(p, found, "a USB redirection device", f"redir{index}"))


def format_redirdev(r: Redirdev, ind: str, live: bool) -> list[str]:
    from tapvirt.conf.devices.misc import alias_address_element

    return alias_address_element(f"{ind}<redirdev bus='usb' type='spicevmc'", "redirdev",
                                 ind, live, alias=r.alias, address=r.address)
