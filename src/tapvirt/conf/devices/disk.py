"""`<disk>`: the model, parse, rules and canonical format of disks."""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING

from tapvirt.conf import errors as E
from tapvirt.conf.devices.common import format_alias, format_boot, parse_alias, parse_boot
from tapvirt.conf.xmlout import IND, Writer, a

if TYPE_CHECKING:
    from lxml import etree

    from tapvirt.conf.xml import Reader


class DiskBus(StrEnum):
    VIRTIO = "virtio"
    SATA = "sata"
    SCSI = "scsi"


class DiskFormat(StrEnum):
    RAW = "raw"
    QCOW2 = "qcow2"


class DiskDevice(StrEnum):
    DISK = "disk"
    CDROM = "cdrom"


@dataclass(frozen=True)
class Disk:
    source_file: str
    target_dev: str  # vda, sda, ...
    target_bus: DiskBus
    format: DiskFormat = DiskFormat.RAW
    device: DiskDevice = DiskDevice.DISK
    readonly: bool = False
    boot_order: int | None = None
    alias: str | None = None  # assigned stably after parsing: virtio-disk0, sata0-0-0, ...


DISK_DEV_RE = {
    DiskBus.VIRTIO: re.compile(r"vd([a-z]{1,3})\Z"),
    DiskBus.SATA: re.compile(r"sd([a-z]{1,3})\Z"),
    DiskBus.SCSI: re.compile(r"sd([a-z]{1,3})\Z"),
}


def parse_disk(r: Reader, el: etree._Element) -> Disk:
    found = r.shape(
        el, ("type", "device"), ("driver", "source", "target", "readonly", "boot", "alias")
    )
    if el.get("type", "file") != "file":
        raise r.fail(
            E.INVALID_VALUE, el,
            f"Invalid value for attribute 'type' in element 'disk': '{el.get('type')}'.",
            "tapvirt supports type='file' disks (an image file or a block device path)",
            attr="type",
        )
    device = r.enum(el, "device", DiskDevice) if el.get("device") is not None else DiskDevice.DISK
    fmt = DiskFormat.RAW
    if (d := r.one(found, "driver")) is not None:
        r.shape(d, ("name", "type"))
        if d.get("name", "qemu") != "qemu":
            raise r.fail(
                E.INVALID_VALUE, d,
                f"Invalid value for attribute 'name' in element 'driver': '{d.get('name')}'.",
                "use name='qemu'", attr="name",
            )
        if d.get("type") is not None:
            fmt = r.enum(d, "type", DiskFormat)
    src = r.need(found, "source", el)
    r.shape(src, ("file",), required_attrs=("file",))
    path = r.abspath(src, "file", src.get("file", ""))
    tgt = r.need(found, "target", el)
    r.shape(tgt, ("dev", "bus"), required_attrs=("dev",))
    dev = tgt.get("dev", "")
    if tgt.get("bus") is not None:
        bus = r.enum(tgt, "bus", DiskBus)
    elif dev.startswith("vd"):
        bus = DiskBus.VIRTIO
    else:
        bus = DiskBus.SCSI  # libvirt's choice for sdX without bus=
    if DISK_DEV_RE[bus].match(dev) is None:
        stem = "vd" if bus is DiskBus.VIRTIO else "sd"
        raise r.fail(
            E.INVALID_VALUE, tgt,
            f"disk target '{dev[:40]}' does not fit bus '{bus}'",
            f"name it {stem}a, {stem}b, ... for bus='{bus}'", attr="dev",
        )
    if device is DiskDevice.CDROM and bus is DiskBus.VIRTIO:
        raise r.fail(
            E.INVALID_VALUE, tgt, "a cdrom cannot sit on the virtio bus",
            "use <target dev='sda' bus='sata'/> for a cdrom", attr="bus",
        )
    readonly = device is DiskDevice.CDROM
    if (ro := r.one(found, "readonly")) is not None:
        r.shape(ro)
        readonly = True
    return Disk(
        source_file=path, target_dev=dev, target_bus=bus, format=fmt, device=device,
        readonly=readonly, boot_order=parse_boot(r, r.one(found, "boot")),
        alias=parse_alias(r, r.one(found, "alias"), auto_alias(bus, dev)),
    )


def auto_alias(bus: DiskBus, dev: str) -> str:
    """libvirt's name for the disk: virtio-disk0, sata0-0-0 (controller-bus-unit), ..."""
    mt = DISK_DEV_RE[bus].match(dev)
    assert mt is not None  # checked at parse
    idx = disk_index(mt.group(1))
    if bus is DiskBus.VIRTIO:
        return f"virtio-disk{idx}"
    if bus is DiskBus.SATA:
        return f"sata{idx // 6}-0-{idx % 6}"
    return f"scsi{idx // 7}-0-0-{idx % 7}"


def disk_index(letters: str) -> int:
    """libvirt's virDiskNameToIndex: a=0 ... z=25, aa=26 ..."""
    idx = 0
    for i, c in enumerate(letters):
        idx = (idx + (1 if i else 0)) * 26 + (ord(c) - ord("a"))
    return idx


def format_disk(disk: Disk, w: Writer, live: bool) -> None:
    i2, i3 = IND * 2, IND * 3
    w(f"{i2}<disk type='file' device={a(disk.device)}>")
    w(f"{i3}<driver name='qemu' type={a(disk.format)}/>")
    w(f"{i3}<source file={a(disk.source_file)}/>")
    w(f"{i3}<target dev={a(disk.target_dev)} bus={a(disk.target_bus)}/>")
    if disk.readonly:
        w(f"{i3}<readonly/>")
    format_boot(disk.boot_order, w)
    format_alias(disk.alias, w, live)
    w(f"{i2}</disk>")
