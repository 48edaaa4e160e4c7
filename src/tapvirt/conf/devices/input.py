"""`<input>`: mouse, tablet and keyboard on the PS/2, USB or virtio bus (libvirt 9.0).

The implicit PS/2 mouse and keyboard of an x86 machine are added by the post-parse step
(`tapvirt.conf.defaults`); this module parses, checks and formats the element itself.
Host input devices (`type='passthrough'`, `type='evdev'`) are refused: they need the host's
/dev/input event nodes, which an unprivileged user does not have.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING

from tapvirt.conf import errors as E
from tapvirt.conf.addresses import Address, AddressType
from tapvirt.conf.devices.common import address_lines, parse_device_address
from tapvirt.conf.devices.virtio import VirtioOptions, parse_virtio_driver, virtio_driver_lines
from tapvirt.errors import define

if TYPE_CHECKING:
    from lxml import etree

    from tapvirt.conf.xml import Reader

INPUT_HOST_DEVICE = define(
    "input-host-device",
    "<input type='passthrough'|'evdev'>: a host /dev/input device given to the guest",
    layer="conf",
)


class InputType(StrEnum):
    MOUSE = "mouse"
    TABLET = "tablet"
    KEYBOARD = "keyboard"


class InputBus(StrEnum):
    PS2 = "ps2"  # built into the x86 machine: no -device
    USB = "usb"
    VIRTIO = "virtio"


@dataclass(frozen=True)
class Input:
    type: InputType
    bus: InputBus
    model_virtio: bool = False  # model='virtio' was written (virtio bus only)
    alias: str | None = None  # input0, input1, ... by position, as libvirt does
    address: Address | None = None  # usb: its port, virtio: its PCI slot (assigned)
    virtio: VirtioOptions | None = None  # <driver iommu= ats= packed= page_per_vq=>


def default_bus(itype: InputType) -> InputBus:
    """libvirt's default on x86 when bus= is absent: PS/2 mouse and keyboard, USB tablet."""
    return InputBus.USB if itype is InputType.TABLET else InputBus.PS2


def parse_input(p: Reader, el: etree._Element, index: int) -> Input:
    from tapvirt.conf.devices.common import parse_alias as _alias

    raw = el.get("type")
    if raw in ("passthrough", "evdev"):
        raise p.fail(
            INPUT_HOST_DEVICE, el,
            f"input type '{raw}' hands a host /dev/input device to the guest; an "
            "unprivileged QEMU cannot open it", "remove it; use <input type='tablet' "
            "bus='usb'/> or a virtio keyboard/mouse with the graphics console", attr="type",
        )
    found = p.shape(el, ("type", "bus", "model"), ("driver", "alias", "address"),
                    required_attrs=("type",))
    itype = p.enum(el, "type", InputType)
    bus_raw = el.get("bus")
    if bus_raw in ("xen", "parallels", "none"):
        raise p.fail(
            E.INVALID_VALUE, el, f"input bus '{bus_raw}' does not exist on a QEMU x86 machine",
            "use bus='usb', bus='virtio' or bus='ps2'", attr="bus",
        )
    bus = p.enum(el, "bus", InputBus) if bus_raw is not None else default_bus(itype)
    if bus is InputBus.PS2 and itype is InputType.TABLET:
        raise p.fail(
            E.INVALID_VALUE, el, "ps2 bus does not support tablet input device",
            "use bus='usb' (or bus='virtio') for a tablet", attr="bus",
        )
    model = el.get("model")
    if model is not None:
        if model != "virtio":
            raise p.fail(
                E.INVALID_VALUE, el, f"unknown input model '{model[:40]}'",
                "use model='virtio' with bus='virtio', or leave model out", attr="model",
            )
        if bus is not InputBus.VIRTIO:
            raise p.fail(
                E.INVALID_VALUE, el, f"input model 'virtio' needs bus='virtio', not '{bus}'",
                "write bus='virtio' or remove model=", attr="model",
            )
    allowed = {InputBus.USB: (AddressType.USB,), InputBus.VIRTIO: (AddressType.PCI,)}
    return Input(
        type=itype, bus=bus, model_virtio=model is not None,
        virtio=parse_virtio_driver(p, p.one(found, "driver"), bus is InputBus.VIRTIO),
        alias=_alias(p, p.one(found, "alias"), f"input{index}"),
        address=parse_device_address(p, p.one(found, "address"), allowed.get(bus, ()),
                                     f"a {bus} {itype}"),
    )


def format_input(i: Input, ind: str, live: bool) -> list[str]:
    from tapvirt.conf.devices.misc import _alias_lines, _element
    from tapvirt.conf.xmlout import a as _a

    head = f"{ind}<input type={_a(i.type)} bus={_a(i.bus)}"
    if i.model_virtio:
        head += " model='virtio'"
    return _element(head, "input", virtio_driver_lines(i.virtio, ind)
                    + _alias_lines(i.alias, ind, live) + address_lines(i.address, ind), ind)
