"""QMP steps for hot-plugging and unplugging devices. PURE: model -> steps (the hotplug
counterpart of the command line: the same -netdev/-device/-blockdev objects).

The steps are what the supervisor runs (`tapvirt.domains.control`): each QMP command
with its undo, so that a failure anywhere leaves nothing behind. The NIC sequence is
libvirt 9.0's (oracle sample 13, libvirt-behaviour.md §6.3):

    getfd tapfd-<alias><i> (one per queue, the fd rides along)  [undo closefd]
    netdev_add {"type":"tap","fds":"tapfd-net10:tapfd-net11","id":"hostnet1"}  [netdev_del]
    device_add {"driver":"virtio-net-pci","mq":true,"vectors":6,...}  [device_del]
    set_link {"name":"net1","up":false}      only for <link state='down'/>

A memory device (dimm, nvdimm): object-add of its thread-context and backend, then
device_add of the pc-dimm / nvdimm, the objects of the command line
(`tapvirt.qemu.argv.memory.memory_device_objects`), each undone on failure.

Unplug: device_del, wait for DEVICE_DELETED (the guest must release the device: it may
refuse or never answer), then netdev_del. A device_del of a device that is already gone
(an earlier unplug the guest completed late) is not an error: the rest still runs.

PCI placement: on `pc` QEMU picks a free slot of pci.0 itself; q35's pcie.0 cannot
hot-plug (`Bus 'pcie.0' does not support hotplugging`), so the device goes onto a free
pcie-root-port found with query-pci (`free_root_port`).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from tapvirt.conf.devices.memory import MemoryDevice
from tapvirt.conf.model import Disk, DiskBus, DiskType, Domain, Interface, LinkState
from tapvirt.domains.live_errors import (
    HOTPLUG_FAILED,
    HOTPLUG_REFUSED,
    HOTPLUG_UNSUPPORTED,
    NO_PCI_SLOT,
)
from tapvirt.errors import TapvirtError
from tapvirt.qemu.argv.disk import (
    disk_device,
    format_node,
    format_node_name,
    storage_node,
    throttle_commands,
)
from tapvirt.qemu.argv.interface import NetBackend, netdev, nic_device

Step = dict[str, Any]
DETACH_TIMEOUT = 10.0  # libvirt waits 5 s for DEVICE_DELETED (then reports it pending)


def _err(code: Any, subject: str, cause: str, fix: str) -> dict[str, str]:
    return {"code": code.code, "subject": subject, "cause": cause, "fix": fix}


def nic_attach(iface: Interface, alias: str, backend: NetBackend, *,
               bus: str | None = None) -> tuple[list[Step], list[int]]:
    """The steps to add one NIC, and the fds they pass (positions named by the steps)."""
    subject = f"interface {alias} ({iface.mac})"
    steps: list[Step] = []
    fds: list[int] = []
    names: dict[int, int | str] = {}
    for prefix, group in (("tapfd", backend.tap_fds), ("vhostfd", backend.vhost_fds)):
        for i, fd in enumerate(group):
            name = f"{prefix}-{alias}{i}"
            names[fd] = name
            steps.append({"execute": "getfd", "arguments": {"fdname": name}, "fd": len(fds),
                          "undo": {"execute": "closefd", "arguments": {"fdname": name},
                                   "quiet": True}})
            fds.append(fd)
    backend_args = netdev(backend, names)
    steps.append({"execute": "netdev_add", "arguments": backend_args,
                  "undo": {"execute": "netdev_del", "arguments": {"id": backend_args["id"]}},
                  "error": _err(HOTPLUG_FAILED, subject, "QEMU refused the network backend",
                                "see the reason; the device was left as it was")})
    device = nic_device(iface, alias, backend)
    if bus is not None:
        device["bus"] = bus
    steps.append({"execute": "device_add", "arguments": device,
                  "undo": {"execute": "device_del", "arguments": {"id": alias},
                           "quiet": True},
                  "error": _err(HOTPLUG_FAILED, subject, "QEMU refused the NIC",
                                "see the reason; nothing was left behind")})
    if iface.link_state is LinkState.DOWN:
        steps.append({"execute": "set_link", "arguments": {"name": alias, "up": False},
                      "error": _err(HOTPLUG_FAILED, subject,
                                    "Couldn't set link state on interface",
                                    "see the reason")})
    return steps, fds


def device_detach(alias: str, subject: str, *, timeout: float = DETACH_TIMEOUT) -> list[Step]:
    """device_del + wait for DEVICE_DELETED (shared by NICs and disks)."""
    return [
        {"execute": "device_del", "arguments": {"id": alias},
         "tolerate": {"DeviceNotFound": 1},
         "error": _err(HOTPLUG_FAILED, subject, "QEMU refused to unplug it",
                       "see the reason")},
        {"wait_event": "DEVICE_DELETED", "match": {"device": alias}, "timeout": timeout,
         "error": _err(HOTPLUG_REFUSED, subject,
                       f"the guest did not release it within {timeout:g} s (it ignores or "
                       "refuses the unplug request; a paused guest cannot answer)",
                       "make sure the guest runs and supports PCI hotplug; run the detach "
                       "again later: once the guest released it, that completes the removal "
                       "(or restart the guest)")},
    ]


def nic_detach(alias: str, mac: str, *, timeout: float = DETACH_TIMEOUT) -> list[Step]:
    steps = device_detach(alias, f"interface {alias} ({mac})", timeout=timeout)
    steps.append({"execute": "netdev_del", "arguments": {"id": f"host{alias}"},
                  "tolerate": {"GenericError": 0}})  # already gone: nothing to remove
    return steps


def disk_attach(disk: Disk, *, dom: Domain, block: bool, has_scsi: bool,
                bus: str | None = None) -> list[Step]:
    """blockdev-add (protocol node, format node) + device_add, each undone on failure;
    the same objects as on the command line (tapvirt.qemu.argv.disk)."""
    alias = disk.alias or disk.target_dev
    subject = f"disk {disk.target_dev} ({disk.source_label})"
    if disk.target_bus is DiskBus.SATA:
        raise TapvirtError(HOTPLUG_UNSUPPORTED, subject,
                           "QEMU cannot hot-plug onto a SATA (AHCI) bus",
                           "use <target bus='virtio'/> (vdX), or bus='scsi' on a guest "
                           "that has a SCSI disk already; or add it with --config and restart")
    if disk.target_bus is DiskBus.SCSI and not has_scsi:
        raise TapvirtError(HOTPLUG_UNSUPPORTED, subject,
                           "the guest has no SCSI controller to plug a SCSI disk into",
                           "use <target bus='virtio'/> (vdX), or add it with --config and "
                           "restart")
    if block and disk.type is DiskType.FILE:
        disk = replace(disk, type=DiskType.BLOCK)  # a block device named by <source file>
    proto = storage_node(disk, alias)
    fmt = format_node(disk, alias)
    device = disk_device(dom, disk, alias, fmt["node-name"])
    if bus is not None and disk.target_bus is DiskBus.VIRTIO:
        device["bus"] = bus
    refused = "see the reason; nothing was left behind"
    return [
        {"execute": "blockdev-add", "arguments": proto,
         "undo": {"execute": "blockdev-del", "arguments": {"node-name": proto["node-name"]}},
         "error": _err(HOTPLUG_FAILED, subject, "QEMU cannot open the image", refused)},
        {"execute": "blockdev-add", "arguments": fmt,
         "undo": {"execute": "blockdev-del", "arguments": {"node-name": fmt["node-name"]}},
         "error": _err(HOTPLUG_FAILED, subject, f"QEMU cannot read it as {disk.format}",
                       refused)},
        {"execute": "device_add", "arguments": device,
         "undo": {"execute": "device_del", "arguments": {"id": alias}, "quiet": True},
         "error": _err(HOTPLUG_FAILED, subject, "QEMU refused the disk device", refused)},
        # <iotune>, as at start (libvirt's qemuDomainAttachDiskGeneric does the same)
        *({**cmd, "error": _err(HOTPLUG_FAILED, subject, "QEMU refused the disk's "
                                "<iotune> limits", refused)}
          for cmd in throttle_commands(replace(dom, devices=replace(
              dom.devices, disks=(replace(disk, alias=alias),))))),
    ]


def memory_attach(dom: Domain, mem: MemoryDevice) -> list[Step]:
    """The steps to add one memory device of `dom` (the domain with it, its slot and
    alias assigned): libvirt's qemuDomainAttachMemory (object-add, device_add)."""
    from tapvirt.qemu.argv.memory import memory_device_objects

    subject = f"memory device {mem.alias} ({mem.size_kib} KiB)"
    if not mem.on_slot:
        raise TapvirtError(HOTPLUG_UNSUPPORTED, subject,
                           "tapvirt hot-plugs dimms and nvdimms, not virtio-mem devices yet",
                           "add it with --config and restart the guest")
    objects, device = memory_device_objects(dom, mem)
    steps: list[Step] = [
        {"execute": "object-add", "arguments": obj,
         "undo": {"execute": "object-del", "arguments": {"id": obj["id"]}, "quiet": True},
         "error": _err(HOTPLUG_FAILED, subject, "QEMU refused the memory backend",
                       "see the reason (RAM the host cannot give, a file QEMU cannot "
                       "open); nothing was left behind")}
        for obj in objects]
    steps.append({"execute": "device_add", "arguments": device,
                  "undo": {"execute": "device_del", "arguments": {"id": device["id"]},
                           "quiet": True},
                  "error": _err(HOTPLUG_FAILED, subject, "QEMU refused the memory device",
                                "see the reason; nothing was left behind")})
    return steps


def disk_detach(disk: Disk, *, timeout: float = DETACH_TIMEOUT) -> list[Step]:
    alias = disk.alias or disk.target_dev
    steps = device_detach(alias, f"disk {disk.target_dev}", timeout=timeout)
    for node in (format_node_name(alias), f"{alias}-storage"):
        steps.append({"execute": "blockdev-del", "arguments": {"node-name": node},
                      "tolerate": {"GenericError": 0}})
    return steps


def cdrom_change(disk: Disk, new_source: str | None) -> list[Step]:
    """Swap a cdrom's medium (libvirt: update-device with a new <source file>); no source:
    eject it."""
    alias = disk.alias or disk.target_dev
    if new_source is None:
        return [{"execute": "eject", "arguments": {"id": alias, "force": True},
                 "error": _err(HOTPLUG_FAILED, f"disk {disk.target_dev}",
                               "QEMU could not eject the medium", "see the reason")}]
    return [{"execute": "blockdev-change-medium",
             "arguments": {"id": alias, "filename": new_source, "format": disk.format.value,
                           "read-only-mode": "read-only", "force": True},
             "error": _err(HOTPLUG_FAILED, f"disk {disk.target_dev}",
                           "QEMU could not change the medium",
                           "check that the new image exists and is readable")}]


def free_root_port(query_pci: list[dict[str, Any]], *,
                   taken: frozenset[str] = frozenset()) -> str:
    """The id of a pcie-root-port with nothing plugged in (q35), from query-pci."""
    for bus in query_pci:
        for dev in bus.get("devices", []):
            bridge = dev.get("pci_bridge")
            qid = dev.get("qdev_id") or ""
            if bridge is None or not qid or qid in taken:
                continue
            desc = (dev.get("class_info") or {}).get("desc", "")
            if "bridge" in desc.lower() and not bridge.get("devices"):
                return str(qid)
    raise TapvirtError(NO_PCI_SLOT, "q35 machine",
                       "no free pcie-root-port: q35's root bus cannot hot-plug",
                       "add <controller type='pci' model='pcie-root-port'/> to the "
                       "definition, one per device to hot-plug (tapvirt edit NAME), and "
                       "restart the guest")
