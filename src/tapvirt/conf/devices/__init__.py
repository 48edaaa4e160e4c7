"""`<devices>`: one module per device family, composed here.

Each family module (`disk`, `interface`, `chardev`, ...) holds its element's model, parse,
rules and canonical format. This module holds the `Devices` container, dispatches the
children of `<devices>` to the families, and checks what spans devices (unique targets,
aliases, boot orders). Adding a family: its module, a field in `Devices`, its tag in
`_TAGS`, one line in `parse_devices` and one in `format_devices` (in libvirt's order).

No family module imports `tapvirt.conf.model` (which imports them): no import cycle.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from tapvirt.conf import errors as E
from tapvirt.conf.devices.chardev import (
    Chardev,
    ChardevKind,
    console_rules,
    format_chardev,
    parse_chardevs,
)
from tapvirt.conf.devices.controller import (
    Controller,
    check_controllers,
    format_controller,
    parse_controllers,
)
from tapvirt.conf.devices.disk import Disk, format_disk, parse_disk, sort_disks
from tapvirt.conf.devices.interface import Interface, format_interface, parse_interface
from tapvirt.conf.devices.peripherals import TAGS as _PERIPHERAL_TAGS
from tapvirt.conf.devices.peripherals import (
    device_aliases,
    format_peripherals,
    parse_peripherals,
)
from tapvirt.conf.xmlout import IND, Writer, t

if TYPE_CHECKING:
    from lxml import etree

    from tapvirt.conf.devices.channel import Channel, Redirdev
    from tapvirt.conf.devices.graphics import Graphics, Video
    from tapvirt.conf.devices.hub import Hub
    from tapvirt.conf.devices.input import Input
    from tapvirt.conf.devices.iommu import Iommu
    from tapvirt.conf.devices.memory import MemoryDevice
    from tapvirt.conf.devices.misc import Memballoon, Panic, Rng, Watchdog
    from tapvirt.conf.devices.sound import Audio, Sound
    from tapvirt.conf.devices.tpm import Tpm
    from tapvirt.conf.model import Os
    from tapvirt.conf.xml import Reader

__all__ = ["Devices", "format_devices", "parse_devices"]


@dataclass(frozen=True)
class Devices:
    emulator: str | None = None
    disks: tuple[Disk, ...] = ()
    controllers: tuple[Controller, ...] = ()
    interfaces: tuple[Interface, ...] = ()
    serials: tuple[Chardev, ...] = ()
    consoles: tuple[Chardev, ...] = ()
    channels: tuple[Channel, ...] = ()
    inputs: tuple[Input, ...] = ()
    tpm: Tpm | None = None
    graphics: tuple[Graphics, ...] = ()
    sounds: tuple[Sound, ...] = ()
    audios: tuple[Audio, ...] = ()
    videos: tuple[Video, ...] = ()
    redirdevs: tuple[Redirdev, ...] = ()
    hubs: tuple[Hub, ...] = ()
    watchdog: Watchdog | None = None
    memballoon: Memballoon | None = None
    rngs: tuple[Rng, ...] = ()
    panics: tuple[Panic, ...] = ()
    iommu: Iommu | None = None
    memories: tuple[MemoryDevice, ...] = ()  # <memory model='dimm'>, slots assigned


_EMPTY = Devices()

# The children of <devices> in the order of libvirt's virDomainDefFormat (the canonical
# order): emulator disk controller lease filesystem interface smartcard serial parallel
# console channel input tpm graphics sound audio video hostdev redirdev redirfilter hub
# watchdog memballoon rng panic shmem memory iommu vsock.
_TAGS = ("disk", "controller", "interface", "serial", "console", *_PERIPHERAL_TAGS)


def parse_devices(r: Reader, el: etree._Element, os_: Os) -> Devices:
    found = r.shape(el, (), ("emulator", *_TAGS), multi=_TAGS)
    emulator = None
    if (e := r.one(found, "emulator")) is not None:
        emulator = r.abspath(e, None, r.text(e))
    disk_els, disks = sort_disks(found.get("disk", []), [parse_disk(r, d) for d in
                                                        found.get("disk", [])])
    found["disk"] = disk_els
    ctl_els, ctls = parse_controllers(r, found.get("controller", []))
    check_controllers(r, ctl_els, ctls)
    ifaces = tuple(parse_interface(r, i, n) for n, i in enumerate(found.get("interface", [])))
    serials = parse_chardevs(r, found.get("serial", []), ChardevKind.SERIAL)
    consoles = parse_chardevs(r, found.get("console", []), ChardevKind.CONSOLE)
    serials, consoles = console_rules(r, found.get("console", []), consoles, serials)
    _cross_checks(r, found, disks, ifaces, os_)
    devices = Devices(
        emulator=emulator, disks=disks, controllers=tuple(ctls), interfaces=ifaces,
        serials=serials, consoles=consoles, **parse_peripherals(r, found),
    )
    _unique_user_aliases(r, el, devices)
    return devices


def _unique_user_aliases(r: Reader, el: etree._Element, d: Devices) -> None:
    """User aliases (`ua-...`) of the other families against each other and the disks' and
    NICs' (those two are checked element by element in `_cross_checks`)."""
    seen = {x.alias for x in d.disks if x.alias is not None}
    seen |= {x.alias for x in d.interfaces if x.alias is not None}
    for alias in device_aliases(d):
        if alias is None:
            continue
        if alias in seen:
            raise r.fail(
                E.DUPLICATE_ALIAS, el, f"non unique alias detected: {alias}",
                "give every device its own alias",
            )
        seen.add(alias)


def format_devices(
    d: Devices, w: Writer, live: bool, actual: Mapping[str, str]
) -> None:
    """`<devices>` with every family's elements, in libvirt's order."""
    if d == _EMPTY:
        w(f"{IND}<devices/>")
        return
    w(f"{IND}<devices>")
    if d.emulator is not None:
        w(f"{IND * 2}<emulator>{t(d.emulator)}</emulator>")
    for disk in d.disks:
        format_disk(disk, w, live)
    for ctl in d.controllers:
        format_controller(ctl, w, live)
    for iface in d.interfaces:
        format_interface(iface, w, live, actual)
    for chardev in (*d.serials, *d.consoles):
        format_chardev(chardev, w)
    format_peripherals(d, w, live)
    w(f"{IND}</devices>")


def _cross_checks(
    r: Reader,
    found: dict[str, list[etree._Element]],
    disks: tuple[Disk, ...],
    ifaces: tuple[Interface, ...],
    os_: Os,
) -> None:
    disk_els = found.get("disk", [])
    iface_els = found.get("interface", [])
    devices: list[tuple[etree._Element, Disk | Interface]] = [
        *zip(disk_els, disks, strict=True), *zip(iface_els, ifaces, strict=True)
    ]
    targets: dict[str, tuple[etree._Element, Disk]] = {}
    for el, disk in zip(disk_els, disks, strict=True):
        if disk.target_dev in targets:
            other = targets[disk.target_dev][1]
            raise r.fail(
                E.DUPLICATE_TARGET, el,
                f"target '{disk.target_dev}' duplicated for disk sources "
                f"'{other.source_file}' and '{disk.source_file}'",
                "give each disk its own target dev (vda, vdb, ...)",
            )
        targets[disk.target_dev] = (el, disk)
    devs: dict[str, etree._Element] = {}
    for el, iface in zip(iface_els, ifaces, strict=True):
        if iface.dev is not None:
            if iface.dev in devs:
                raise r.fail(
                    E.DUPLICATE_TARGET, el,
                    f"target dev '{iface.dev}' is used by two interfaces (the other at line "
                    f"{devs[iface.dev].sourceline})",
                    "give each interface its own device; one tap cannot serve two NICs",
                )
            devs[iface.dev] = el
    aliases: dict[str, etree._Element] = {}
    boots: dict[int, etree._Element] = {}
    for el, dev in devices:
        if dev.alias is not None:
            if dev.alias in aliases:
                raise r.fail(
                    E.DUPLICATE_ALIAS, el, f"non unique alias detected: {dev.alias}",
                    f"rename one of them (the other is at line {aliases[dev.alias].sourceline})",
                )
            aliases[dev.alias] = el
        if dev.boot_order is not None:
            if os_.boot:
                raise r.fail(
                    E.BOOT_CONFLICT, el,
                    "per-device boot elements cannot be used together with os/boot elements",
                    "remove <boot dev=...> from <os> or every per-device <boot order=...>",
                )
            if dev.boot_order in boots:
                raise r.fail(
                    E.DUPLICATE_BOOT_ORDER, el,
                    f"boot order '{dev.boot_order}' used for more than one device",
                    "give each device its own order",
                )
            boots[dev.boot_order] = el
