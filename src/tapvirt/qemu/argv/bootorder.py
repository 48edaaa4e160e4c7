"""`<os><boot dev=...>` as per-device boot indexes, the way libvirt 9.0 hands it to QEMU
(qemuProcessPrepareDeviceBootorder): the position of each boot device in the list becomes
the `bootindex` of the first cdrom, the first disk, the first floppy and the first NIC.
libvirt never passes `-boot order=` any more; the PC BIOS's own order holds only three
devices ("Too many boot devices for PC" with four). PURE."""

from __future__ import annotations

from dataclasses import replace

from tapvirt.conf.devices.disk import DiskDevice
from tapvirt.conf.model import BootDev, Domain

_DISK_BOOT = {DiskDevice.CDROM: BootDev.CDROM, DiskDevice.DISK: BootDev.HD,
              DiskDevice.FLOPPY: BootDev.FD}


def device_boot_order(dom: Domain) -> Domain:
    """The domain with `<os><boot>` moved onto its devices (unchanged without one)."""
    if not dom.os.boot:
        return dom
    index = {dev: n + 1 for n, dev in enumerate(dom.os.boot)}
    disks = []
    for d in dom.devices.disks:
        kind = _DISK_BOOT[d.device]
        disks.append(replace(d, boot_order=index.pop(kind, None)))
    ifaces = list(dom.devices.interfaces)
    if ifaces and BootDev.NETWORK in index:
        ifaces[0] = replace(ifaces[0], boot_order=index[BootDev.NETWORK])
    devices = replace(dom.devices, disks=tuple(disks), interfaces=tuple(ifaces))
    return replace(dom, os=replace(dom.os, boot=()), devices=devices)
