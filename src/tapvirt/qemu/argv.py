"""The QEMU command line for a domain. PURE: Domain + network backends -> list[str].

Network arguments follow libvirt 9.0 with QEMU 7.2 (JSON `-netdev`/`-device`, fd values
as JSON strings, `fds` joined with ':'), so `tapvirt domxml-to-native` can be compared
with `virsh domxml-to-native`; docs/argv.md lists the intentional differences.

File descriptors: QEMU refers to tap and vhost fds by number. With `fd_base` (the
default, 3) the numbers on the command line are fd_base, fd_base+1, ... in interface
order (tap fds, then vhost fds), independent of the numbers the launcher happens to hold;
`fd_layout()` says which parent fd becomes which child fd and `remap_actions()` turns
that into `os.posix_spawn` file actions. So `domxml-to-native` prints exactly the argv
that `start` runs. With `fd_base=None` the parent's own numbers are used (for a launcher
that passes fds unchanged with `pass_fds`).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from tapvirt.conf.model import (
    BootDev,
    Chardev,
    ChardevType,
    Disk,
    DiskBus,
    DiskDevice,
    Domain,
    DomainType,
    Interface,
    LifecycleAction,
    LinkState,
    NicModel,
)

FD_BASE = 3  # the first fd number QEMU sees for tap/vhost fds (0-2 are stdio)
DEFAULT_MACHINE = "pc"
AHCI_PORTS = 6

NetdevKind = Literal["tap", "user"]


@dataclass(frozen=True)
class NetBackend:
    """What the command line needs to know of one interface's host side."""

    alias: str
    kind: NetdevKind
    tap_fds: tuple[int, ...] = ()  # fds in the launcher (placeholders for a dry run)
    vhost_fds: tuple[int, ...] = ()
    host_mtu: int | None = None  # MTU told to a virtio guest (<mtu> or inherited)


def fd_layout(backends: Iterable[NetBackend], fd_base: int | None = FD_BASE
              ) -> list[tuple[int, int]]:
    """(launcher fd, fd number in QEMU) for every fd QEMU must inherit, in argv order."""
    pairs: list[tuple[int, int]] = []
    for b in backends:
        for fd in (*b.tap_fds, *b.vhost_fds):
            pairs.append((fd, fd if fd_base is None else fd_base + len(pairs)))
    return pairs


def remap_actions(pairs: Sequence[tuple[int, int]]) -> list[tuple[int, ...]]:
    """`os.posix_spawn` file_actions that give the child each parent fd under its new number.

    Sources may overlap targets (parent fd 4 -> 3 while parent fd 3 -> 4), so every source
    is first duplicated above all of them, then moved down; dup2 clears close-on-exec.
    """
    if not pairs:
        return []
    high = max(max(p, c) for p, c in pairs) + 1
    actions: list[tuple[int, ...]] = []
    for i, (parent, _child) in enumerate(pairs):
        actions.append((os.POSIX_SPAWN_DUP2, parent, high + i))
    for i, (_parent, child) in enumerate(pairs):
        actions.append((os.POSIX_SPAWN_DUP2, high + i, child))
    for i in range(len(pairs)):
        actions.append((os.POSIX_SPAWN_CLOSE, high + i))
    return actions


def emulator(dom: Domain) -> str:
    if dom.devices.emulator:
        return dom.devices.emulator
    arch = dom.os.arch or "x86_64"
    return "qemu-system-" + ("i386" if arch in ("i686", "i386") else arch)


def build_argv(
    dom: Domain,
    backends: Sequence[NetBackend],
    *,
    qmp_socket: str,
    fd_base: int | None = FD_BASE,
) -> list[str]:
    """The whole QEMU command line. Starts paused (-S): the launcher sends set_link, cont."""
    numbers: dict[int, int | str] = dict(fd_layout(backends, fd_base))
    by_alias = {b.alias: b for b in backends}
    argv = [emulator(dom), "-name", f"guest={_opt(dom.name)}", "-S"]
    machine = dom.os.machine or DEFAULT_MACHINE
    acpi = "" if dom.features.acpi else ",acpi=off"
    argv += ["-machine", f"{machine}{acpi}"]
    argv += ["-accel", "kvm" if dom.type is DomainType.KVM else "tcg"]
    argv += ["-m", f"size={dom.memory_kib}k"]
    argv += ["-smp", str(dom.vcpus)]
    argv += ["-uuid", dom.uuid]
    argv += ["-no-user-config", "-nodefaults", "-display", "none"]
    argv += ["-chardev", f"socket,id=charmonitor,path={_opt(qmp_socket)},server=on,wait=off",
             "-mon", "chardev=charmonitor,id=monitor,mode=control"]
    if dom.on_reboot is LifecycleAction.DESTROY:
        argv.append("-no-reboot")
    if dom.os.kernel:
        argv += ["-kernel", dom.os.kernel]
    if dom.os.initrd:
        argv += ["-initrd", dom.os.initrd]
    if dom.os.cmdline:
        argv += ["-append", dom.os.cmdline]
    per_device_boot = any(d.boot_order for d in dom.devices.disks) or any(
        i.boot_order for i in dom.devices.interfaces)
    if dom.os.boot and not per_device_boot:
        order = "".join({BootDev.HD: "c", BootDev.CDROM: "d", BootDev.NETWORK: "n",
                         BootDev.FD: "a"}[b] for b in dom.os.boot)
        argv += ["-boot", f"order={order}"]
    argv += _disks(dom)
    argv += _chardevs(dom)
    for iface in dom.devices.interfaces:
        alias = _alias(iface, dom)
        backend = by_alias.get(alias)
        if backend is None:
            raise ValueError(f"no network backend for interface {alias}")
        argv += ["-netdev", _json(netdev(backend, numbers)),
                 "-device", _json(nic_device(iface, alias, backend))]
    return argv


def netdev(backend: NetBackend, numbers: Mapping[int, int | str] | None = None
           ) -> dict[str, Any]:
    """The -netdev object. `numbers` maps the backend's fds to what QEMU calls them: fd
    numbers on the command line, or `getfd` names (e.g. tapfd-net10) for netdev_add."""
    nid = f"host{backend.alias}"
    if backend.kind == "user":
        return {"type": "user", "id": nid}
    num = numbers or {}
    taps = [str(num.get(fd, fd)) for fd in backend.tap_fds]
    out: dict[str, Any] = {"type": "tap"}
    if len(taps) == 1:
        out["fd"] = taps[0]
    else:
        out["fds"] = ":".join(taps)
    if backend.vhost_fds:
        vhosts = [str(num.get(fd, fd)) for fd in backend.vhost_fds]
        out["vhost"] = True
        if len(vhosts) == 1:
            out["vhostfd"] = vhosts[0]
        else:
            out["vhostfds"] = ":".join(vhosts)
    out["id"] = nid
    return out


def nic_driver(model: NicModel) -> str:
    return "virtio-net-pci" if model is NicModel.VIRTIO else model.value


def nic_device(iface: Interface, alias: str, backend: NetBackend) -> dict[str, Any]:
    """The -device object of a NIC (also the device_add arguments on hotplug)."""
    out: dict[str, Any] = {"driver": nic_driver(iface.model)}
    if iface.model is NicModel.VIRTIO:
        queues = max(1, len(backend.tap_fds)) if backend.kind == "tap" else 1
        if queues > 1:
            out["mq"] = True
            out["vectors"] = 2 * queues + 2
        if backend.host_mtu is not None:
            out["host_mtu"] = backend.host_mtu
    out["netdev"] = f"host{alias}"
    out["id"] = alias
    out["mac"] = iface.mac
    if iface.boot_order is not None:
        out["bootindex"] = iface.boot_order
    return out


def link_state_commands(dom: Domain) -> list[dict[str, Any]]:
    """QMP commands to send before `cont`: <link state='down'/> is not an argv option."""
    return [
        {"execute": "set_link", "arguments": {"name": _alias(i, dom), "up": False}}
        for i in dom.devices.interfaces
        if i.link_state is LinkState.DOWN
    ]


def interface_alias(dom: Domain, index: int) -> str:
    return _alias(dom.devices.interfaces[index], dom)


def _alias(iface: Interface, dom: Domain) -> str:
    if iface.alias:
        return iface.alias
    # conf assigns aliases; a hand-built Domain without them gets libvirt's netN by position
    return f"net{dom.devices.interfaces.index(iface)}"


def _disks(dom: Domain) -> list[str]:
    argv: list[str] = []
    disks = dom.devices.disks
    machine = dom.os.machine or DEFAULT_MACHINE
    q35 = "q35" in machine
    # An AHCI controller has 6 ports: sdX with index i sits on controller i // 6, port i % 6
    # (libvirt's layout). q35 has controller 0 built in, called "ide".
    for ctl in sorted({_disk_unit(d.target_dev) // AHCI_PORTS for d in disks
                       if d.target_bus is DiskBus.SATA}):
        if ctl or not q35:
            argv += ["-device", _json({"driver": "ahci", "id": f"sata{ctl}"})]
    if any(d.target_bus is DiskBus.SCSI for d in disks):
        argv += ["-device", _json({"driver": "virtio-scsi-pci", "id": "scsi0"})]
    for n, disk in enumerate(disks):
        alias = disk.alias or f"disk{n}"
        ro = disk.readonly or disk.device is DiskDevice.CDROM
        argv += ["-blockdev", _json({"driver": "file", "filename": disk.source_file,
                                     "node-name": f"{alias}-file", "read-only": ro})]
        argv += ["-blockdev", _json({"driver": disk.format.value, "file": f"{alias}-file",
                                     "node-name": f"{alias}-fmt", "read-only": ro})]
        argv += ["-device", _json(_disk_device(disk, alias, q35))]
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


def _chardevs(dom: Domain) -> list[str]:
    # On x86 a <console> of a domain that has a <serial> is that serial port, not a second
    # device (libvirt formats it as an alias of serial0); without serials it becomes one.
    chars: list[Chardev] = list(dom.devices.serials) or list(dom.devices.consoles)
    argv: list[str] = []
    for n, ch in enumerate(chars):
        port = ch.port if dom.devices.serials else n
        cid = f"charserial{port}"
        argv += ["-chardev", _chardev_backend(ch, cid)]
        argv += ["-device", _json({"driver": "isa-serial", "chardev": cid,
                                   "id": f"serial{port}", "index": port})]
    return argv


def _chardev_backend(ch: Chardev, cid: str) -> str:
    if ch.type is ChardevType.PTY:
        return f"pty,id={cid}"
    if ch.type is ChardevType.NULL:
        return f"null,id={cid}"
    if ch.type is ChardevType.FILE:
        return f"file,id={cid},path={_opt(ch.path or '')}"
    listen = ",server=on,wait=off" if ch.unix_listen else ""
    return f"socket,id={cid},path={_opt(ch.path or '')}{listen}"


def _opt(value: str) -> str:
    """QEMU's option syntax: a comma inside a value is written twice."""
    return value.replace(",", ",,")


def _json(obj: dict[str, Any]) -> str:
    return json.dumps(obj, separators=(",", ":"))
