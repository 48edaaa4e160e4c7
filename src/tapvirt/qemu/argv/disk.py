"""Disks as libvirt 9.0 gives them to QEMU 7.2: a storage node and a format node per
image (`-blockdev`), then the guest device (`-device`) on the bus its stored address
names. An empty cdrom or floppy has a device and no node.

Node names are `<alias>-storage` / `<alias>-format` (libvirt: `libvirt-N-storage`, N
counted down over the disks and kept in its status XML): derived from the stable alias,
the names of a running guest's nodes are known to hot-plug and unplug without a record
of them. The guest sees no difference (docs/argv.md).

The controllers the disks plug into are `tapvirt.qemu.argv.controller`'s; the floppy
controller of pc machines is built in (`isa-fdc`, only its boot index is set here).
"""

from __future__ import annotations

from typing import Any

from tapvirt.conf.addresses import DriveAddress, DriveBus, drive_address
from tapvirt.conf.devices.disk import (
    IOTUNE_FIELDS,
    DetectZeroes,
    Disk,
    DiskBus,
    DiskCache,
    DiskDevice,
    DiskDiscard,
    DiskType,
    ErrorPolicy,
    HostTransport,
    NetSource,
)
from tapvirt.conf.model import Domain
from tapvirt.qemu.argv.controller import address_props, drive_bus_props
from tapvirt.qemu.argv.encode import jsonarg
from tapvirt.qemu.argv.machine import is_q35
from tapvirt.qemu.argv.virtio import virtio_device


def disk_args(dom: Domain) -> list[str]:
    disks = dom.devices.disks
    argv = _floppy_controller(dom)
    for n, disk in enumerate(disks):
        alias = disk.alias or f"disk{n}"
        node = alias
        has_medium = disk.has_medium
        if has_medium:
            argv += ["-blockdev", jsonarg(storage_node(disk, node))]
            argv += ["-blockdev", jsonarg(format_node(disk, node))]
        argv += ["-device", jsonarg(disk_device(dom, disk, alias,
                                                format_node_name(node) if has_medium else None))]
    return argv


def qom_name(disk: Disk, alias: str) -> str:
    """libvirt's qemuAssignDeviceDiskAlias qomName: the QOM path of the device that holds
    the disk's block backend (virtio and usb disks hold it in a child device)."""
    if disk.target_bus is DiskBus.VIRTIO:
        return f"/machine/peripheral/{alias}/virtio-backend"
    if disk.target_bus is DiskBus.USB:
        return f"/machine/peripheral/{alias}/{alias}.0/legacy[0]"
    return alias


def throttle_commands(dom: Domain) -> list[dict[str, Any]]:
    """libvirt's qemuProcessSetupDiskThrottling: with -blockdev, <iotune> is not on the
    command line but one block_set_io_throttle per disk before the guest runs, every
    rate given (0: none), the group and the burst lengths only when set. An empty drive
    gets none (QEMU refuses it there, libvirt skips it too)."""
    out: list[dict[str, Any]] = []
    for n, disk in enumerate(dom.devices.disks):
        tune = disk.iotune
        if tune is None or not disk.has_medium:
            continue
        args: dict[str, Any] = {"id": qom_name(disk, disk.alias or f"disk{n}")}
        for name, qmp in IOTUNE_FIELDS:
            if not name.endswith("_length"):
                args[qmp] = tune.get(name)
        if tune.group_name is not None:
            args["group"] = tune.group_name
        for name, qmp in IOTUNE_FIELDS:
            if name.endswith("_length") and tune.get(name):
                args[qmp] = tune.get(name)
        out.append({"execute": "block_set_io_throttle", "arguments": args})
    return out


def _floppy_controller(dom: Domain) -> list[str]:
    """A floppy's boot index is a property of the ISA floppy controller: built into pc
    (set with -global), a device of its own on q35 (libvirt adds it with the floppies)."""
    floppies = [d for d in dom.devices.disks if d.device is DiskDevice.FLOPPY]
    if not floppies:
        return []
    boot: dict[str, int] = {}
    for d in floppies:
        unit = d.address.unit if isinstance(d.address, DriveAddress) else 0
        if d.boot_order is not None and unit < 2:
            boot[f"bootindex{'AB'[unit]}"] = d.boot_order
    if is_q35(dom):
        return ["-device", jsonarg({"driver": "isa-fdc", **dict(sorted(boot.items()))})]
    out: list[str] = []
    for key, order in sorted(boot.items()):
        out += ["-global", f"isa-fdc.{key}={order}"]
    return out


def _effective_cache(disk: Disk) -> DiskCache | None:
    """libvirt's qemuDomainPrepareDiskCachemode: a writable shared disk gets cache='none'
    when the definition chose none itself (no host page cache between two guests)."""
    if disk.cache in (None, DiskCache.DEFAULT) and disk.shareable and not disk.readonly:
        return DiskCache.NONE
    return disk.cache


def _cache(disk: Disk) -> dict[str, Any]:
    cache = _effective_cache(disk)
    flags = cache.flags if cache is not None else None
    if flags is None:
        return {}
    _writeback, direct, no_flush = flags
    return {"cache": {"direct": direct, "no-flush": no_flush}}


def format_node_name(node: str) -> str:
    """The format node's name: what the device drives, and what live verbs look up in QMP."""
    return f"{node}-format"


def storage_node(disk: Disk, node: str) -> dict[str, Any]:
    """The protocol node: the file or block device itself, or the network server."""
    if disk.network is not None:
        return _network_node(disk, disk.network, node)
    if disk.type is DiskType.BLOCK:
        driver = "host_cdrom" if disk.device is DiskDevice.CDROM else "host_device"
    else:
        driver = "file"
    out: dict[str, Any] = {"driver": driver, "filename": disk.source_file}
    if disk.io is not None:
        out["aio"] = str(disk.io)
    out["node-name"] = f"{node}-storage"
    out.update(_cache(disk))
    out["auto-read-only"] = True
    out["discard"] = "unmap"
    return out


def _network_node(disk: Disk, net: NetSource, node: str) -> dict[str, Any]:
    """libvirt's qemuBlockStorageSourceGetNBDProps: the server as a SocketAddress (the
    port a string, as libvirt writes it), the export when named."""
    h = net.host
    server: dict[str, Any] = (
        {"type": "unix", "path": h.socket} if h.transport is HostTransport.UNIX
        else {"type": "inet", "host": h.name, "port": str(h.port)})
    out: dict[str, Any] = {"driver": str(net.protocol), "server": server}
    if net.name is not None:
        out["export"] = net.name
    out["node-name"] = f"{node}-storage"
    out.update(_cache(disk))
    out["auto-read-only"] = True
    out["discard"] = "unmap"
    return out


def format_node(disk: Disk, node: str) -> dict[str, Any]:
    """The format node (raw or qcow2) the guest device uses."""
    out: dict[str, Any] = {"node-name": format_node_name(node), "read-only": disk.readonly}
    if disk.discard is not None:
        out["discard"] = str(disk.discard)
    zeroes = disk.detect_zeroes
    if zeroes is DetectZeroes.UNMAP and disk.discard is not DiskDiscard.UNMAP:
        zeroes = DetectZeroes.ON  # libvirt: 'unmap' needs discard='unmap', else 'on'
    if zeroes is not None:
        out["detect-zeroes"] = str(zeroes)
    out.update(_cache(disk))
    out["driver"] = str(disk.format)
    out["file"] = f"{node}-storage"
    return out


_DRIVE_BUSES = {DiskBus.IDE: DriveBus.IDE, DiskBus.SATA: DriveBus.SATA,
                DiskBus.SCSI: DriveBus.SCSI, DiskBus.FDC: DriveBus.FDC}
_DRIVERS = {
    DiskBus.VIRTIO: ("virtio-blk-pci", "virtio-blk-pci"),
    DiskBus.IDE: ("ide-hd", "ide-cd"),
    DiskBus.SATA: ("ide-hd", "ide-cd"),
    DiskBus.SCSI: ("scsi-hd", "scsi-cd"),
    DiskBus.USB: ("usb-storage", "usb-storage"),
    DiskBus.FDC: ("floppy", "floppy"),
}


def disk_device(dom: Domain, disk: Disk, alias: str, drive: str | None) -> dict[str, Any]:
    """The guest's disk device (libvirt's qemuBuildDiskDeviceProps, in its key order)."""
    cd = disk.device is DiskDevice.CDROM
    out = virtio_device(_DRIVERS[disk.target_bus][cd], disk.virtio)
    # qemuBuildVirtioDevProps, then the queue counts, before the address
    for key, val in (("ioeventfd", disk.ioeventfd), ("event_idx", disk.event_idx),
                     ("num-queues", disk.queues), ("queue-size", disk.queue_size)):
        if val is not None:
            out[key] = val
    addr = disk.address
    if addr is None and disk.target_bus in _DRIVE_BUSES:
        # a model built without the post-parse step: the address its target name implies
        addr = drive_address(_DRIVE_BUSES[disk.target_bus], disk.target_dev)
    if isinstance(addr, DriveAddress):
        out.update(drive_bus_props(dom, str(disk.target_bus), addr))
    else:
        out.update(address_props(dom, addr))
    if disk.target_bus is DiskBus.SCSI:
        # QEMU named the disk in its VPD page after the -drive; libvirt keeps that name
        out["device_id"] = disk.serial or f"drive-{alias}"
    if disk.shareable:
        out["share-rw"] = True
    if drive is not None:
        out["drive"] = drive
    out["id"] = alias
    if disk.boot_order is not None and disk.device is not DiskDevice.FLOPPY:
        out["bootindex"] = disk.boot_order
    for key, size in (("logical_block_size", disk.logical_block_size),
                      ("physical_block_size", disk.physical_block_size)):
        if size is not None:
            out[key] = size
    if disk.wwn is not None:
        out["wwn"] = int(disk.wwn.removeprefix("0x"), 16)
    if disk.rotation_rate is not None:
        out["rotation_rate"] = disk.rotation_rate
    if disk.target_bus is DiskBus.USB:
        out["removable"] = bool(disk.removable)
    cache = _effective_cache(disk)
    if cache is not None and cache is not DiskCache.DEFAULT:
        flags = cache.flags
        assert flags is not None
        out["write-cache"] = "on" if flags[0] else "off"
    if (g := disk.geometry) is not None:
        out.update({"cyls": g.cyls, "heads": g.heads, "secs": g.secs})
        if g.trans is not None:
            out["bios-chs-trans"] = str(g.trans)
    if disk.serial is not None:
        out["serial"] = disk.serial.replace(" ", "\\ ")
    out.update(_error_policy(disk))
    return out


def _error_policy(disk: Disk) -> dict[str, str]:
    """libvirt: werror from error_policy (enospace: QEMU's enospc); rerror from
    rerror_policy, else the same as error_policy unless that is enospace."""
    out: dict[str, str] = {}
    if disk.error_policy is not None:
        out["werror"] = "enospc" if disk.error_policy is ErrorPolicy.ENOSPACE else str(
            disk.error_policy)
    read = disk.rerror_policy
    if read is None and disk.error_policy is not ErrorPolicy.ENOSPACE:
        read = disk.error_policy
    if read is not None:
        out["rerror"] = str(read)
    return out
