"""`<disk>`: the model, parse, rules and canonical format of disks.

Image files and block devices (`type='file'|'block'`), as disks, cdroms (possibly empty,
tray open or closed) and floppies, on the ide, sata, scsi, usb, virtio and fdc buses, with
libvirt's `<driver>` attributes (format, cache, io, discard, detect_zeroes), `serial`,
`wwn`, `<readonly/>`, `<shareable/>`, `<boot order>` and `<address>`; network disks
(`type='network'`) of protocol nbd on one TCP or unix-socket host. The other network
protocols, backing chains and encryption are refused by name.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING

from tapvirt.conf import errors as E
from tapvirt.conf.addresses import (
    Address,
    AddressType,
    DriveAddress,
    DriveBus,
    disk_index,
    drive_address,
    format_address,
    parse_address,
)
from tapvirt.conf.devices.common import format_alias, format_boot, parse_alias, parse_boot
from tapvirt.conf.devices.virtio import (
    VIRTIO_ATTRS,
    VirtioOptions,
    parse_virtio_options,
    virtio_attrs,
)
from tapvirt.conf.xmlout import IND, Writer, a, t
from tapvirt.errors import define

DISK_IOTUNE = define(
    "disk-iotune",
    "<disk><iotune> limits that libvirt or QEMU refuse: total_ together with read_/write_, "
    "a _max without its rate or below it, a _max_length without its _max, a limit above "
    "10^15, group_name alone, two disks of one group with different limits",
    layer="conf")

if TYPE_CHECKING:
    from lxml import etree

    from tapvirt.conf.xml import Reader


class DiskType(StrEnum):
    FILE = "file"
    BLOCK = "block"
    NETWORK = "network"


class NetProtocol(StrEnum):
    """The network protocols tapvirt builds (refused.py names the others)."""

    NBD = "nbd"


class HostTransport(StrEnum):
    TCP = "tcp"
    UNIX = "unix"


NBD_DEFAULT_PORT = 10809  # libvirt's virStorageSourceNetworkDefaultPort for nbd


@dataclass(frozen=True)
class NetHost:
    """`<source><host>`: a TCP server (name, port) or a unix socket."""

    transport: HostTransport = HostTransport.TCP
    name: str | None = None  # tcp only
    port: int | None = None  # tcp only; libvirt fills in the protocol's default port
    socket: str | None = None  # unix only


@dataclass(frozen=True)
class NetSource:
    """`<disk type='network'>`'s `<source protocol= name=>` with its one `<host>`."""

    protocol: NetProtocol
    host: NetHost
    name: str | None = None  # nbd: the export name (none: the server's default export)


class DiskBus(StrEnum):
    IDE = "ide"
    FDC = "fdc"
    SCSI = "scsi"
    VIRTIO = "virtio"
    USB = "usb"
    SATA = "sata"


class DiskFormat(StrEnum):
    RAW = "raw"
    QCOW2 = "qcow2"


class DiskDevice(StrEnum):
    DISK = "disk"
    CDROM = "cdrom"
    FLOPPY = "floppy"


class DiskCache(StrEnum):
    DEFAULT = "default"
    NONE = "none"
    WRITETHROUGH = "writethrough"
    WRITEBACK = "writeback"
    DIRECTSYNC = "directsync"
    UNSAFE = "unsafe"

    @property
    def flags(self) -> tuple[bool, bool, bool] | None:
        """(writeback, direct, no-flush) as QEMU wants them; None for the default."""
        return _CACHE_FLAGS.get(self)


_CACHE_FLAGS = {
    DiskCache.NONE: (True, True, False),
    DiskCache.WRITETHROUGH: (False, False, False),
    DiskCache.WRITEBACK: (True, False, False),
    DiskCache.DIRECTSYNC: (False, True, False),
    DiskCache.UNSAFE: (True, False, True),
}


class DiskIo(StrEnum):
    NATIVE = "native"
    THREADS = "threads"
    IO_URING = "io_uring"


class DiskDiscard(StrEnum):
    UNMAP = "unmap"
    IGNORE = "ignore"


class DetectZeroes(StrEnum):
    OFF = "off"
    ON = "on"
    UNMAP = "unmap"


class ErrorPolicy(StrEnum):
    STOP = "stop"
    REPORT = "report"
    IGNORE = "ignore"
    ENOSPACE = "enospace"  # write errors only; QEMU's werror=enospc


class GeometryTrans(StrEnum):
    NONE = "none"
    LBA = "lba"
    AUTO = "auto"


@dataclass(frozen=True)
class Geometry:
    """`<geometry>`: the BIOS CHS geometry the guest sees (ide/sata/virtio)."""

    cyls: int
    heads: int
    secs: int
    trans: GeometryTrans | None = None


class Tray(StrEnum):
    OPEN = "open"
    CLOSED = "closed"


# libvirt's <iotune> children in its order, with block_set_io_throttle's argument names
IOTUNE_FIELDS = (
    ("total_bytes_sec", "bps"), ("read_bytes_sec", "bps_rd"), ("write_bytes_sec", "bps_wr"),
    ("total_iops_sec", "iops"), ("read_iops_sec", "iops_rd"), ("write_iops_sec", "iops_wr"),
    ("total_bytes_sec_max", "bps_max"), ("read_bytes_sec_max", "bps_rd_max"),
    ("write_bytes_sec_max", "bps_wr_max"), ("total_iops_sec_max", "iops_max"),
    ("read_iops_sec_max", "iops_rd_max"), ("write_iops_sec_max", "iops_wr_max"),
    ("size_iops_sec", "iops_size"),
    ("total_bytes_sec_max_length", "bps_max_length"),
    ("read_bytes_sec_max_length", "bps_rd_max_length"),
    ("write_bytes_sec_max_length", "bps_wr_max_length"),
    ("total_iops_sec_max_length", "iops_max_length"),
    ("read_iops_sec_max_length", "iops_rd_max_length"),
    ("write_iops_sec_max_length", "iops_wr_max_length"),
)
IOTUNE_MAX = 10**15  # QEMU's THROTTLE_VALUE_MAX (libvirt's QEMU_BLOCK_IOTUNE_MAX)


@dataclass(frozen=True)
class Iotune:
    """`<iotune>`: the limits set (non-zero, libvirt's order) and the throttle group."""

    limits: tuple[tuple[str, int], ...] = ()
    group_name: str | None = None

    def get(self, name: str) -> int:
        return dict(self.limits).get(name, 0)


@dataclass(frozen=True)
class Disk:
    source_file: str | None  # the image file or block device; None: an empty cdrom/floppy
    target_dev: str  # vda, sda, hdc, fda ...
    target_bus: DiskBus
    format: DiskFormat = DiskFormat.RAW  # libvirt's QEMU driver defaults to raw as well
    device: DiskDevice = DiskDevice.DISK
    type: DiskType = DiskType.FILE
    # <driver> attributes: None where the definition says nothing (QEMU's defaults)
    cache: DiskCache | None = None
    io: DiskIo | None = None
    discard: DiskDiscard | None = None
    detect_zeroes: DetectZeroes | None = None
    error_policy: ErrorPolicy | None = None  # <driver error_policy>: QEMU's werror (+rerror)
    rerror_policy: ErrorPolicy | None = None
    ioeventfd: bool | None = None  # virtio only
    event_idx: bool | None = None  # virtio only
    queues: int | None = None  # virtio only: num-queues
    queue_size: int | None = None  # virtio only: queue-size
    virtio: VirtioOptions | None = None  # virtio only: <driver iommu= ats= packed= ...>
    geometry: Geometry | None = None
    logical_block_size: int | None = None  # <blockio>
    physical_block_size: int | None = None
    rotation_rate: int | None = None  # <target rotation_rate>: 1 = SSD, else rpm
    readonly: bool = False
    shareable: bool = False
    tray: Tray | None = None  # cdrom/floppy: <target tray=...>
    removable: bool | None = None  # usb: <target removable=...>
    serial: str | None = None
    wwn: str | None = None
    boot_order: int | None = None
    alias: str | None = None  # assigned stably after parsing: virtio-disk0, ide0-0-0, ...
    address: Address | None = None  # assigned after parsing (drive, pci or usb)
    network: NetSource | None = None  # type='network': the server (source_file is None)
    iotune: Iotune | None = None  # set over QMP before the guest runs (as libvirt)

    @property
    def has_medium(self) -> bool:
        """A source QEMU opens (an image, a device or a server), tray not open."""
        return (self.source_file is not None or self.network is not None) and (
            self.tray is not Tray.OPEN)

    @property
    def source_label(self) -> str | None:
        """What virsh domblklist shows as the source: the path, or the network name."""
        if self.network is not None:
            return self.network.name or f"{self.network.protocol}"
        return self.source_file


# the target names libvirt accepts per bus (virDiskNameParse: prefix + letters)
DISK_DEV_RE = {
    DiskBus.VIRTIO: re.compile(r"vd([a-z]{1,3})\Z"),
    DiskBus.SATA: re.compile(r"sd([a-z]{1,3})\Z"),
    DiskBus.SCSI: re.compile(r"sd([a-z]{1,3})\Z"),
    DiskBus.USB: re.compile(r"sd([a-z]{1,3})\Z"),
    DiskBus.IDE: re.compile(r"hd([a-z]{1,3})\Z"),
    DiskBus.FDC: re.compile(r"fd([a-z]{1,3})\Z"),
}
_SERIAL_RE = re.compile(r"[A-Za-z0-9_\- .]{1,40}\Z")  # libvirt's diskSerial (bounded)
_WWN_RE = re.compile(r"(?:0x)?[0-9a-fA-F]{16}\Z")
_ADDRESSES = {
    DiskBus.VIRTIO: (AddressType.PCI,),
    DiskBus.USB: (AddressType.USB,),
}


def default_bus(dev: str, device: DiskDevice) -> DiskBus:
    """libvirt's virDomainDiskDefParseXML: the bus from the target name when bus= is absent."""
    if dev.startswith("hd"):
        return DiskBus.IDE
    if dev.startswith("fd") or device is DiskDevice.FLOPPY:
        return DiskBus.FDC
    if dev.startswith("vd"):
        return DiskBus.VIRTIO
    if dev.startswith("sd"):
        return DiskBus.SCSI
    return DiskBus.IDE


_DRIVER_ATTRS = ("name", "type", "cache", "error_policy", "rerror_policy", "io", "ioeventfd",
                 "event_idx", "discard", "detect_zeroes", "queues", "queue_size", *VIRTIO_ATTRS)
_VIRTIO_ONLY = ("ioeventfd", "event_idx", "queues", "queue_size")
_BLOCK_SIZES = (512, 1024, 2048, 4096, 8192, 16384, 32768)  # QEMU: a power of 2, 512..32k


def _onoff(r: Reader, el: etree._Element, attr: str) -> bool | None:
    v = el.get(attr)
    if v is None:
        return None
    if v not in ("on", "off"):
        raise r.fail(E.INVALID_VALUE, el, f"Invalid value for attribute '{attr}' in element "
                     f"'{el.tag}': '{v[:40]}'.", "use on or off", attr=attr)
    return v == "on"


@dataclass(frozen=True)
class _DriverOpts:
    error_policy: ErrorPolicy | None = None
    rerror_policy: ErrorPolicy | None = None
    ioeventfd: bool | None = None
    event_idx: bool | None = None
    queues: int | None = None
    queue_size: int | None = None
    virtio: VirtioOptions | None = None


def _driver_opts(r: Reader, d: etree._Element, bus: DiskBus) -> _DriverOpts:
    for attr in _VIRTIO_ONLY:
        if d.get(attr) is not None and bus is not DiskBus.VIRTIO:
            raise r.fail(E.NOT_FOR_TYPE, d, f"disk {attr} is supported only for the virtio "
                         "bus", f"remove {attr}= or use <target bus='virtio'/>", attr=attr)
    ep = r.enum(d, "error_policy", ErrorPolicy) if d.get("error_policy") is not None else None
    rp = None
    if d.get("rerror_policy") is not None:
        rp = r.enum(d, "rerror_policy", ErrorPolicy)
        if rp is ErrorPolicy.ENOSPACE:
            raise r.fail(E.INVALID_VALUE, d, "Invalid disk read error policy: 'enospace'",
                         "use stop, report or ignore", attr="rerror_policy")
    queues = r.uint(d, "queues", 1, 256) if d.get("queues") is not None else None
    qsize = None
    if d.get("queue_size") is not None:
        qsize = r.uint(d, "queue_size", 4, 1024)
        if qsize & (qsize - 1):
            raise r.fail(E.INVALID_VALUE, d, f"queue_size {qsize} is not a power of 2",
                         "use 128, 256, 512 or 1024", attr="queue_size")
    return _DriverOpts(ep, rp, _onoff(r, d, "ioeventfd"), _onoff(r, d, "event_idx"),
                       queues, qsize, parse_virtio_options(r, d, bus is DiskBus.VIRTIO))


def _geometry(r: Reader, el: etree._Element | None, bus: DiskBus) -> Geometry | None:
    if el is None:
        return None
    r.shape(el, ("cyls", "heads", "secs", "trans"), required_attrs=("cyls", "heads", "secs"))
    if bus not in (DiskBus.IDE, DiskBus.SATA, DiskBus.VIRTIO):
        raise r.fail(E.NOT_FOR_TYPE, el, f"QEMU has no CHS geometry for {bus} disks",
                     "remove <geometry> or use an ide, sata or virtio disk")
    trans = r.enum(el, "trans", GeometryTrans) if el.get("trans") is not None else None
    if trans is not None and bus is DiskBus.VIRTIO:
        raise r.fail(E.NOT_FOR_TYPE, el, "trans= is only valid for ide and sata disks",
                     "remove trans=", attr="trans")
    return Geometry(r.uint(el, "cyls", 1, 16383), r.uint(el, "heads", 1, 16),
                    r.uint(el, "secs", 1, 255), trans)


def _blockio(r: Reader, el: etree._Element | None) -> tuple[int | None, int | None]:
    if el is None:
        return None, None
    r.shape(el, ("logical_block_size", "physical_block_size"))
    out: list[int | None] = []
    for attr in ("logical_block_size", "physical_block_size"):
        if el.get(attr) is None:
            out.append(None)
            continue
        size = r.uint(el, attr, 512, 32768)
        if size not in _BLOCK_SIZES:
            raise r.fail(E.INVALID_VALUE, el, f"{attr} {size} is not a power of 2",
                         "use 512 or 4096", attr=attr)
        out.append(size)
    log, phys = out
    if log is not None and log > (phys or 512):  # QEMU's physical default is 512
        raise r.fail(E.INVALID_VALUE, el, f"logical_block_size {log} is larger than "
                     f"physical_block_size {phys or 512} (QEMU refuses that)",
                     f"set physical_block_size='{log}' (or larger)",
                     attr="physical_block_size" if phys is not None else None)
    return log, phys


def parse_disk(r: Reader, el: etree._Element) -> Disk:
    found = r.shape(
        el, ("type", "device"),
        ("driver", "source", "geometry", "blockio", "target", "iotune", "readonly", "shareable",
         "serial", "wwn", "boot", "alias", "address"),
    )
    dtype = r.enum(el, "type", DiskType) if el.get("type") is not None else DiskType.FILE
    device = r.enum(el, "device", DiskDevice) if el.get("device") is not None else DiskDevice.DISK
    fmt, cache, io, discard, zeroes = DiskFormat.RAW, None, None, None, None
    if (d := r.one(found, "driver")) is not None:
        r.shape(d, _DRIVER_ATTRS)
        if d.get("name", "qemu") != "qemu":
            raise r.fail(
                E.INVALID_VALUE, d,
                f"Invalid value for attribute 'name' in element 'driver': '{d.get('name')}'.",
                "use name='qemu'", attr="name",
            )
        if d.get("type") is not None:
            fmt = r.enum(d, "type", DiskFormat)
        cache = r.enum(d, "cache", DiskCache) if d.get("cache") is not None else None
        io = r.enum(d, "io", DiskIo) if d.get("io") is not None else None
        discard = r.enum(d, "discard", DiskDiscard) if d.get("discard") is not None else None
        if d.get("detect_zeroes") is not None:
            zeroes = r.enum(d, "detect_zeroes", DetectZeroes)
    source = network = None
    src_attr = "file" if dtype is DiskType.FILE else "dev"
    s = r.one(found, "source")
    if dtype is DiskType.NETWORK:
        network = _network_source(r, s, el)
        if io is not None:
            drv_el = r.one(found, "driver")
            raise r.fail(E.NOT_FOR_TYPE, el if drv_el is None else drv_el, "io= chooses how "
                         "QEMU reads a local file or block device; a network disk has none",
                         "remove io=", attr="io")
    elif s is not None:
        r.shape(s, (src_attr,))
        if s.get(src_attr) is not None:
            source = r.abspath(s, src_attr, s.get(src_attr, ""))
    if source is None and network is None and device is DiskDevice.DISK:
        raise r.fail(
            E.MISSING_ELEMENT, s if s is not None else el,
            f"a disk needs <source {src_attr}=...> (only a cdrom or floppy may be empty)",
            f"add <source {src_attr}='/path'/> inside <disk>",
        )
    tgt = r.need(found, "target", el)
    r.shape(tgt, ("dev", "bus", "tray", "removable", "rotation_rate"), required_attrs=("dev",))
    dev = tgt.get("dev", "")
    bus = r.enum(tgt, "bus", DiskBus) if tgt.get("bus") is not None else default_bus(dev, device)
    mt = DISK_DEV_RE[bus].match(dev)
    if mt is None:
        stem = DISK_DEV_RE[bus].pattern[:2]
        raise r.fail(
            E.INVALID_VALUE, tgt, f"disk target '{dev[:40]}' does not fit bus '{bus}'",
            f"name it {stem}a, {stem}b, ... for bus='{bus}'", attr="dev",
        )
    _bus_fits_device(r, tgt, bus, device)
    drv = r.one(found, "driver")
    opts = _driver_opts(r, drv, bus) if drv is not None else _DriverOpts()
    rotation = None
    if tgt.get("rotation_rate") is not None:
        rotation = r.uint(tgt, "rotation_rate", 1, 65534)
        if bus not in (DiskBus.IDE, DiskBus.SATA, DiskBus.SCSI):
            raise r.fail(E.NOT_FOR_TYPE, tgt, "rotation rate is only valid for SCSI/IDE/SATA "
                         "bus", "remove rotation_rate=", attr="rotation_rate")
    log_bs, phys_bs = _blockio(r, r.one(found, "blockio"))
    tray = None
    if tgt.get("tray") is not None:
        tray = r.enum(tgt, "tray", Tray)
        if device is DiskDevice.DISK:
            raise r.fail(E.NOT_FOR_TYPE, tgt, "tray is only valid for cdrom and floppy",
                         "remove tray=", attr="tray")
    removable = None
    if (rm := tgt.get("removable")) is not None:
        if rm not in ("on", "off"):
            raise r.fail(E.INVALID_VALUE, tgt, f"Invalid value for attribute 'removable' in "
                         f"element 'target': '{rm[:40]}'.", "use on or off", attr="removable")
        if bus is not DiskBus.USB:
            raise r.fail(E.NOT_FOR_TYPE, tgt, "removable is only valid for usb disks",
                         "remove removable=", attr="removable")
        removable = rm == "on"
    readonly = device is DiskDevice.CDROM
    if (ro := r.one(found, "readonly")) is not None:
        r.shape(ro)
        readonly = True
    shareable = False
    if (sh := r.one(found, "shareable")) is not None:
        r.shape(sh)
        shareable = True
    serial = wwn = None
    if (se := r.one(found, "serial")) is not None:
        serial = r.text(se)
        if not _SERIAL_RE.match(serial):
            raise r.fail(E.INVALID_VALUE, se, f"disk serial {serial[:40]!r} has characters "
                         "outside A-Z a-z 0-9 _ - . and space, or is longer than 40",
                         "write a short serial of letters and digits")
    if (ww := r.one(found, "wwn")) is not None:
        wwn = r.text(ww)
        if not _WWN_RE.match(wwn):
            raise r.fail(E.INVALID_VALUE, ww, "Malformed wwn: " + wwn[:40],
                         "write 16 hex digits, e.g. 5000c50015ea71ac")
        if bus not in (DiskBus.IDE, DiskBus.SATA, DiskBus.SCSI):
            raise r.fail(E.NOT_FOR_TYPE, ww, "Only ide and scsi disk support wwn",
                         "remove <wwn> or use an ide, sata or scsi disk")
    address = None
    if (ad := r.one(found, "address")) is not None:
        allowed = _ADDRESSES.get(bus, (AddressType.DRIVE,))
        address = parse_address(r, ad, allowed, f"a {bus} disk")
        if bus is DiskBus.IDE and isinstance(address, DriveAddress) and address.unit > 1:
            # libvirt passes it on; QEMU: "Can't create IDE unit 2, bus supports only 2 units"
            raise r.fail(E.INVALID_VALUE, ad, f"IDE unit {address.unit} does not exist: an "
                         "IDE bus has units 0 and 1", "use unit='0' or unit='1' (another "
                         "bus='1' for more disks), or remove <address>", attr="unit")
    return Disk(
        source_file=source, target_dev=dev, target_bus=bus, format=fmt, device=device,
        type=dtype, cache=cache, io=io, discard=discard, detect_zeroes=zeroes,
        error_policy=opts.error_policy, rerror_policy=opts.rerror_policy,
        ioeventfd=opts.ioeventfd, event_idx=opts.event_idx, queues=opts.queues,
        queue_size=opts.queue_size, virtio=opts.virtio,
        geometry=_geometry(r, r.one(found, "geometry"), bus),
        logical_block_size=log_bs, physical_block_size=phys_bs, rotation_rate=rotation,
        readonly=readonly, shareable=shareable, tray=tray, removable=removable,
        serial=serial, wwn=wwn, boot_order=parse_boot(r, r.one(found, "boot")),
        alias=_alias(r, r.one(found, "alias"), bus, dev, address), address=address,
        network=network, iotune=_iotune(r, r.one(found, "iotune")),
    )


def _iotune(r: Reader, el: etree._Element | None) -> Iotune | None:
    """libvirt's virDomainDiskDefIotuneParse and its validation (domain_validate.c,
    qemu_validate.c), plus the rules QEMU's throttle_is_valid would refuse at start."""
    if el is None:
        return None
    names = [n for n, _ in IOTUNE_FIELDS]
    found = r.shape(el, (), (*names, "group_name"))
    values: dict[str, int] = {}
    for name in names:
        if (child := r.one(found, name)) is not None:
            r.shape(child, text=True)
            if not (child.text or "").isdigit() or len(child.text or "") > 30:
                raise r.fail(E.INVALID_VALUE, child, f"disk iotune field '{name}' must be an "
                             "integer", f"write a whole number of {name.split('_')[1]}")
            value = int(child.text or "0")
            if value > IOTUNE_MAX:
                raise r.fail(DISK_IOTUNE, child, "block I/O throttle limit must be no more "
                             f"than {IOTUNE_MAX} using QEMU", f"lower {name}")
            if value:
                values[name] = value
    group = None
    if (g := r.one(found, "group_name")) is not None:
        group = r.text(g)
    for kind in ("bytes_sec", "iops_sec", "bytes_sec_max", "iops_sec_max"):
        if values.get(f"total_{kind}") and (values.get(f"read_{kind}")
                                            or values.get(f"write_{kind}")):
            raise r.fail(DISK_IOTUNE, el, f"total and read/write {kind} cannot be set at "
                         "the same time", f"keep total_{kind}, or read_{kind} and "
                         f"write_{kind}")
    for way in ("total", "read", "write"):
        for unit in ("bytes", "iops"):
            avg = values.get(f"{way}_{unit}_sec", 0)
            mx = values.get(f"{way}_{unit}_sec_max", 0)
            length = values.get(f"{way}_{unit}_sec_max_length", 0)
            if mx and not avg:
                raise r.fail(DISK_IOTUNE, el, f"{way}_{unit}_sec_max needs {way}_{unit}_sec "
                             "(QEMU: bps_max/iops_max require corresponding bps/iops values)",
                             f"add <{way}_{unit}_sec>, or remove <{way}_{unit}_sec_max>")
            if mx and mx < avg:
                raise r.fail(DISK_IOTUNE, el, f"{way}_{unit}_sec_max {mx} is lower than "
                             f"{way}_{unit}_sec {avg} (QEMU refuses it)",
                             f"make <{way}_{unit}_sec_max> at least {avg}")
            if length > 1 and not mx:
                raise r.fail(DISK_IOTUNE, el, f"{way}_{unit}_sec_max_length needs "
                             f"{way}_{unit}_sec_max (QEMU: bps_max_length/iops_max_length "
                             "require corresponding bps_max/iops_max values)",
                             f"add <{way}_{unit}_sec_max>, or remove the _max_length")
            if mx and length > IOTUNE_MAX // mx:
                raise r.fail(DISK_IOTUNE, el, f"{way}_{unit}_sec_max_length {length} is too "
                             f"long for {way}_{unit}_sec_max {mx} (QEMU: burst length too "
                             "high for this burst rate)", "shorten the burst")
    if group is not None and not values:
        raise r.fail(DISK_IOTUNE, el, "group_name can be configured only together with "
                     "settings", "add the group's limits (e.g. <total_bytes_sec>) or "
                     "remove <group_name>")
    order = {n: i for i, n in enumerate(names)}
    return Iotune(tuple(sorted(values.items(), key=lambda kv: order[kv[0]])), group)


def _network_source(r: Reader, s: etree._Element | None, el: etree._Element) -> NetSource:
    """libvirt's virDomainDiskSourceNetworkParse for nbd (refused.py has refused the other
    protocols and TLS before): one host, the default port filled in."""
    if s is None:
        raise r.fail(E.MISSING_ELEMENT, el, "a network disk needs <source protocol='nbd'> "
                     "with its <host>", "add <source protocol='nbd' name='EXPORT'><host "
                     "name='HOST' port='10809'/></source>")
    found = r.shape(s, ("protocol", "name"), ("host",), multi=("host",),
                    required_attrs=("protocol",))
    protocol = r.enum(s, "protocol", NetProtocol)
    hosts = found.get("host", [])
    if len(hosts) != 1:
        raise r.fail(E.INVALID_VALUE, hosts[1] if hosts else s,
                     f"protocol '{protocol}' accepts only one host (found {len(hosts)})",
                     "give <source> exactly one <host name='HOST' port='PORT'/> (or "
                     "<host transport='unix' socket='/PATH'/>)")
    return NetSource(protocol, _net_host(r, hosts[0]), s.get("name"))


_DNS_NAME_RE = re.compile(r"[a-zA-Z0-9.\-]+\Z")  # libvirt's dnsName


def _host_name_ok(name: str) -> bool:
    """libvirt's schema: a dnsName or an ipAddr (IPv6 without a zone)."""
    if _DNS_NAME_RE.match(name):
        return True
    if "%" in name or len(name) > 45:
        return False
    try:
        ipaddress.IPv6Address(name)
    except ValueError:
        return False
    return True


def _net_host(r: Reader, h: etree._Element) -> NetHost:
    """libvirt's virDomainStorageNetworkParseHost (without rdma, which QEMU dropped)."""
    r.shape(h, ("name", "port", "transport", "socket"))
    transport = (r.enum(h, "transport", HostTransport) if h.get("transport") is not None
                 else HostTransport.TCP)
    if transport is HostTransport.UNIX:
        if h.get("socket") is None:
            raise r.fail(E.MISSING_ATTRIBUTE, h, "missing socket for unix transport",
                         "add socket='/path/to/nbd.sock' to <host>")
        for attr in ("name", "port"):
            if h.get(attr) is not None:
                raise r.fail(E.NOT_FOR_TYPE, h, f"a unix socket host has no {attr}",
                             f"remove {attr}= (or use transport='tcp')", attr=attr)
        return NetHost(transport, socket=r.abspath(h, "socket", h.get("socket", "")))
    if h.get("socket") is not None:
        raise r.fail(E.NOT_FOR_TYPE, h, f"transport '{transport}' does not support socket "
                     "attribute", "remove socket= (or use transport='unix')", attr="socket")
    name = h.get("name")
    if not name:
        raise r.fail(E.MISSING_ATTRIBUTE, h, "missing name for host",
                     "add name='HOST' (a host name or IP address) to <host>")
    if not _host_name_ok(name):
        raise r.fail(E.INVALID_VALUE, h, f"host name {name[:60]!r} is neither a DNS name "
                     "(letters, digits, '.' and '-') nor an IP address",
                     "write a host name such as nbd.example.org, or an address such as "
                     "192.0.2.1 or ::1", attr="name")
    port = r.uint(h, "port", 0, 65535) if h.get("port") is not None else 0
    return NetHost(transport, name=name, port=port or NBD_DEFAULT_PORT)


def _alias(
    r: Reader, el: etree._Element | None, bus: DiskBus, dev: str, address: Address | None
) -> str | None:
    """A user alias is kept; the name libvirt would give the disk itself is accepted and
    left to the post-parse step (which knows the controller model it depends on)."""
    if el is None:
        return None
    idx = disk_index(dev)
    if bus in (DiskBus.VIRTIO, DiskBus.USB):
        names = [f"{'virtio' if bus is DiskBus.VIRTIO else 'usb'}-disk{idx}"]
    else:
        drive = address if isinstance(address, DriveAddress) else (
            drive_address(_DRIVE[bus], dev)
        )
        names = [f"{bus}{drive.controller}-{drive.bus}-{drive.unit}"]
        if bus is DiskBus.SCSI:
            names.append(f"scsi{drive.controller}-{drive.bus}-{drive.target}-{drive.unit}")
    name = parse_alias(r, el, names[-1])
    return None if name in names else name


_DRIVE = {DiskBus.IDE: DriveBus.IDE, DiskBus.SATA: DriveBus.SATA, DiskBus.SCSI: DriveBus.SCSI,
          DiskBus.FDC: DriveBus.FDC}


def sort_disks(
    els: list[etree._Element], disks: list[Disk]
) -> tuple[list[etree._Element], tuple[Disk, ...]]:
    """libvirt's virDomainDiskInsert: a disk goes before the first disk on its bus with a
    higher target index, so disks of one bus are in target order (vda before vdb), which
    is also the order of their slots and of QEMU's devices."""
    out: list[tuple[etree._Element, Disk]] = []
    for el, disk in zip(els, disks, strict=True):
        at = len(out)
        for pos in range(len(out) - 1, -1, -1):
            cur = out[pos][1]
            if cur.target_bus is disk.target_bus and (
                disk_index(cur.target_dev) > disk_index(disk.target_dev)
            ):
                at = pos
        out.insert(at, (el, disk))
    return [el for el, _ in out], tuple(d for _, d in out)


def _bus_fits_device(r: Reader, tgt: etree._Element, bus: DiskBus, device: DiskDevice) -> None:
    if device is DiskDevice.FLOPPY and bus is not DiskBus.FDC:
        raise r.fail(E.INVALID_VALUE, tgt, f"a floppy cannot sit on the {bus} bus",
                     "use <target dev='fda' bus='fdc'/>", attr="bus")
    if bus is DiskBus.FDC and device is not DiskDevice.FLOPPY:
        raise r.fail(E.INVALID_VALUE, tgt, "Invalid bus type 'fdc' for disk",
                     "use device='floppy', or another bus", attr="bus")
    if device is DiskDevice.CDROM and bus is DiskBus.VIRTIO:
        raise r.fail(E.INVALID_VALUE, tgt, "disk type 'virtio' of 'vdX' does not support "
                     "ejectable media", "use <target dev='sda' bus='sata'/> for a cdrom",
                     attr="bus")
    if device is DiskDevice.CDROM and bus is DiskBus.USB:
        raise r.fail(E.INVALID_VALUE, tgt, "a cdrom cannot sit on the usb bus",
                     "use <target dev='sda' bus='sata'/> for a cdrom", attr="bus")


def auto_alias(disk: Disk, scsi_lsi: bool = False) -> str:
    """libvirt's qemuAssignDeviceDiskAlias: virtio-disk0, usb-disk0, ide0-1-0 (controller-
    bus-unit), sata0-0-2, fdc0-0-1, scsi0-0-0 (lsilogic) or scsi0-0-0-3 (+ target)."""
    mt = DISK_DEV_RE[disk.target_bus].match(disk.target_dev)
    assert mt is not None  # checked at parse
    if disk.target_bus is DiskBus.VIRTIO:
        return f"virtio-disk{disk_index(disk.target_dev)}"
    if disk.target_bus is DiskBus.USB:
        return f"usb-disk{disk_index(disk.target_dev)}"
    addr = disk.address
    assert isinstance(addr, DriveAddress), "drive addresses are assigned before aliases"
    if disk.target_bus is DiskBus.SCSI and not scsi_lsi:
        return f"scsi{addr.controller}-{addr.bus}-{addr.target}-{addr.unit}"
    return f"{disk.target_bus}{addr.controller}-{addr.bus}-{addr.unit}"


def _onoff_text(v: bool | None) -> str | None:
    return None if v is None else ("on" if v else "off")


def _format_network(net: NetSource, w: Writer) -> None:
    """libvirt's virDomainDiskSourceFormatNetwork: name, port, transport, socket."""
    i3, i4 = IND * 3, IND * 4
    name = f" name={a(net.name)}" if net.name is not None else ""
    w(f"{i3}<source protocol={a(net.protocol)}{name}>")
    h = net.host
    attrs = "".join(f" {k}={a(v)}" for k, v in (
        ("name", h.name), ("port", None if h.port is None else str(h.port)),
        ("transport", None if h.transport is HostTransport.TCP else h.transport),
        ("socket", h.socket)) if v is not None)
    w(f"{i4}<host{attrs}/>")
    w(f"{i3}</source>")


def _format_iotune(tune: Iotune, w: Writer) -> None:
    """libvirt's virDomainDiskDefFormatIotune: the rates, size_iops_sec, group_name, then
    the burst lengths."""
    i3, i4 = IND * 3, IND * 4
    w(f"{i3}<iotune>")
    for name, value in tune.limits:
        if name.endswith("_length"):
            continue
        w(f"{i4}<{name}>{value}</{name}>")
    if tune.group_name is not None:
        w(f"{i4}<group_name>{t(tune.group_name)}</group_name>")
    for name, value in tune.limits:
        if name.endswith("_length"):
            w(f"{i4}<{name}>{value}</{name}>")
    w(f"{i3}</iotune>")


def format_disk(disk: Disk, w: Writer, live: bool) -> None:
    i2, i3 = IND * 2, IND * 3
    w(f"{i2}<disk type={a(disk.type)} device={a(disk.device)}>")
    drv = "".join(
        f" {k}={a(v)}" for k, v in (
            ("type", disk.format), ("cache", disk.cache), ("error_policy", disk.error_policy),
            ("rerror_policy", disk.rerror_policy), ("io", disk.io),
            ("ioeventfd", _onoff_text(disk.ioeventfd)),
            ("event_idx", _onoff_text(disk.event_idx)),
            ("discard", disk.discard), ("detect_zeroes", disk.detect_zeroes),
            ("queues", None if disk.queues is None else str(disk.queues)),
            ("queue_size", None if disk.queue_size is None else str(disk.queue_size)),
        ) if v is not None
    ) + virtio_attrs(disk.virtio)
    w(f"{i3}<driver name='qemu'{drv}/>")
    if disk.network is not None:
        _format_network(disk.network, w)
    elif disk.source_file is not None:
        attr = "file" if disk.type is DiskType.FILE else "dev"
        w(f"{i3}<source {attr}={a(disk.source_file)}/>")
    if (g := disk.geometry) is not None:
        trans = f" trans={a(g.trans)}" if g.trans is not None else ""
        w(f"{i3}<geometry cyls='{g.cyls}' heads='{g.heads}' secs='{g.secs}'{trans}/>")
    if disk.logical_block_size is not None or disk.physical_block_size is not None:
        bio = "".join(f" {k}='{v}'" for k, v in (
            ("logical_block_size", disk.logical_block_size),
            ("physical_block_size", disk.physical_block_size)) if v is not None)
        w(f"{i3}<blockio{bio}/>")
    tattrs = f" dev={a(disk.target_dev)} bus={a(disk.target_bus)}"
    if disk.tray is not None:
        tattrs += f" tray={a(disk.tray)}"
    if disk.removable is not None:
        tattrs += f" removable='{'on' if disk.removable else 'off'}'"
    if disk.rotation_rate is not None:
        tattrs += f" rotation_rate='{disk.rotation_rate}'"
    w(f"{i3}<target{tattrs}/>")
    if disk.iotune is not None:
        _format_iotune(disk.iotune, w)
    if disk.readonly:
        w(f"{i3}<readonly/>")
    if disk.shareable:
        w(f"{i3}<shareable/>")
    if disk.serial is not None:
        w(f"{i3}<serial>{t(disk.serial)}</serial>")
    if disk.wwn is not None:
        w(f"{i3}<wwn>{t(disk.wwn)}</wwn>")
    format_boot(disk.boot_order, w)
    format_alias(disk.alias, w, live)
    if disk.address is not None:
        w(f"{i3}{format_address(disk.address)}")
    w(f"{i2}</disk>")


__all__ = [
    "IOTUNE_FIELDS",
    "DetectZeroes",
    "Disk",
    "DiskBus",
    "DiskCache",
    "DiskDevice",
    "DiskDiscard",
    "DiskFormat",
    "DiskIo",
    "DiskType",
    "ErrorPolicy",
    "Geometry",
    "GeometryTrans",
    "HostTransport",
    "Iotune",
    "NetHost",
    "NetProtocol",
    "NetSource",
    "Tray",
    "auto_alias",
    "format_disk",
    "parse_disk",
]
