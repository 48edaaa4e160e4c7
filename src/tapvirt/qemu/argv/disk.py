"""Disks: the storage controllers they need, -blockdev (file + format node) and -device,
laid out as libvirt 9.0 does (AHCI ports, virtio-scsi target 0 with the index as LUN)."""

from __future__ import annotations

from typing import Any

from tapvirt.conf.model import Disk, DiskBus, DiskDevice, Domain
from tapvirt.qemu.argv.encode import jsonarg
from tapvirt.qemu.argv.machine import is_q35

AHCI_PORTS = 6


def disk_args(dom: Domain) -> list[str]:
    argv: list[str] = []
    disks = dom.devices.disks
    q35 = is_q35(dom)
    # An AHCI controller has 6 ports: sdX with index i sits on controller i // 6, port i % 6
    # (libvirt's layout). q35 has controller 0 built in, called "ide".
    for ctl in sorted({_disk_unit(d.target_dev) // AHCI_PORTS for d in disks
                       if d.target_bus is DiskBus.SATA}):
        if ctl or not q35:
            argv += ["-device", jsonarg({"driver": "ahci", "id": f"sata{ctl}"})]
    if any(d.target_bus is DiskBus.SCSI for d in disks):
        argv += ["-device", jsonarg({"driver": "virtio-scsi-pci", "id": "scsi0"})]
    for n, disk in enumerate(disks):
        alias = disk.alias or f"disk{n}"
        ro = disk.readonly or disk.device is DiskDevice.CDROM
        argv += ["-blockdev", jsonarg({"driver": "file", "filename": disk.source_file,
                                     "node-name": f"{alias}-file", "read-only": ro})]
        argv += ["-blockdev", jsonarg({"driver": disk.format.value, "file": f"{alias}-file",
                                     "node-name": f"{alias}-fmt", "read-only": ro})]
        argv += ["-device", jsonarg(_disk_device(disk, alias, q35))]
    return argv


def _disk_device(disk: Disk, alias: str, q35: bool) -> dict[str, Any]:
    unit = _disk_unit(disk.target_dev)
    cd = disk.device is DiskDevice.CDROM
    out: dict[str, Any]
    if disk.target_bus is DiskBus.VIRTIO:
        out = {"driver": "virtio-blk-pci", "drive": f"{alias}-fmt", "id": alias}
    elif disk.target_bus is DiskBus.SATA:
        ctl, port = divmod(unit, AHCI_PORTS)
        bus = f"ide.{port}" if q35 and ctl == 0 else f"sata{ctl}.{port}"
        out = {"driver": "ide-cd" if cd else "ide-hd", "bus": bus,
               "drive": f"{alias}-fmt", "id": alias}
    else:
        # libvirt's virtio-scsi layout: target 0, the disk index as the LUN
        out = {"driver": "scsi-cd" if cd else "scsi-hd", "bus": "scsi0.0", "channel": 0,
               "scsi-id": 0, "lun": unit, "drive": f"{alias}-fmt", "id": alias}
    if disk.boot_order is not None:
        out["bootindex"] = disk.boot_order
    return out


def _disk_unit(target: str) -> int:
    """sda -> 0, sdb -> 1, vdaa -> 26 (libvirt's virDiskNameToIndex)."""
    letters = target
    for prefix in ("xvd", "sd", "hd", "vd"):
        if target.startswith(prefix):
            letters = target[len(prefix):]
            break
    n = 0
    for ch in letters:
        if not "a" <= ch <= "z":
            break
        n = n * 26 + (ord(ch) - ord("a") + 1)
    return max(0, n - 1)
