"""`<hub type='usb'>`: a USB hub (QEMU's usb-hub, 8 ports), libvirt 9.0's element.

A hub takes one USB port (its `<address type='usb' bus= port=>`, assigned when absent)
and gives eight: devices on it have a port path, `port='1.2'` is port 2 of the hub on
port 1. libvirt adds hubs itself when the controllers have fewer ports than there are
USB devices; the port trees are assigned in `tapvirt.conf.addresses.assign_usb`. QEMU
arguments: `tapvirt.qemu.argv.hub`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from tapvirt.conf import errors as E
from tapvirt.conf.addresses import UsbAddress
from tapvirt.conf.devices.common import parse_usb_device

if TYPE_CHECKING:
    from lxml import etree

    from tapvirt.conf.xml import Reader


@dataclass(frozen=True)
class Hub:
    alias: str | None = None
    address: UsbAddress | None = None  # its USB port (assigned)


def parse_hub(p: Reader, el: etree._Element, index: int) -> Hub:
    found = p.shape(el, ("type",), ("alias", "address"), required_attrs=("type",))
    if el.get("type") != "usb":
        raise p.fail(
            E.INVALID_VALUE, el, f"unknown hub device type '{el.get('type', '')[:40]}'",
            "use <hub type='usb'>", attr="type",
        )
    return Hub(*parse_usb_device(p, found, "a USB hub", f"hub{index}"))


def format_hub(h: Hub, ind: str, live: bool) -> list[str]:
    from tapvirt.conf.devices.misc import alias_address_element

    return alias_address_element(f"{ind}<hub type='usb'", "hub", ind, live, alias=h.alias,
                                 address=h.address)
