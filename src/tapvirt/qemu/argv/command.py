"""The whole QEMU command: machine, accelerator, memory, cpus, firmware/kernel, boot
order, the monitor; then each device family's arguments from its module. PURE."""

from __future__ import annotations

from collections.abc import Sequence

from tapvirt.conf.model import BootDev, Domain, DomainType, LifecycleAction
from tapvirt.qemu.argv.chardev import chardev_args
from tapvirt.qemu.argv.clock import rtc_args
from tapvirt.qemu.argv.controller import controller_args
from tapvirt.qemu.argv.cpu import cpu_args
from tapvirt.qemu.argv.disk import disk_args
from tapvirt.qemu.argv.encode import opt
from tapvirt.qemu.argv.fds import FD_BASE, fd_layout
from tapvirt.qemu.argv.features import machine_params, pm_args
from tapvirt.qemu.argv.interface import NetBackend, interface_args
from tapvirt.qemu.argv.machine import machine_of


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
    now: float | None = None,
) -> list[str]:
    """The whole QEMU command line. Starts paused (-S): the launcher sends set_link, cont.

    `now` (seconds since 1970, default the current time) fixes a variable <clock>."""
    numbers: dict[int, int | str] = dict(fd_layout(backends, fd_base))
    by_alias = {b.alias: b for b in backends}
    argv = [emulator(dom), "-name", f"guest={opt(dom.name)}", "-S"]
    machine = machine_of(dom)
    acpi = "" if dom.features.acpi else ",acpi=off"
    # usb=off: QEMU adds no USB controller of its own; the definition's are -devices
    argv += ["-machine", f"{machine},usb=off{acpi}{machine_params(dom)}"]
    argv += ["-accel", "kvm" if dom.type is DomainType.KVM else "tcg"]
    argv += cpu_args(dom)
    argv += ["-m", f"size={dom.memory_kib}k"]
    argv += ["-smp", str(dom.vcpus)]
    argv += ["-uuid", dom.uuid]
    argv += ["-no-user-config", "-nodefaults", "-display", "none"]
    argv += ["-chardev", f"socket,id=charmonitor,path={opt(qmp_socket)},server=on,wait=off",
             "-mon", "chardev=charmonitor,id=monitor,mode=control"]
    argv += rtc_args(dom, now)
    if dom.on_reboot is LifecycleAction.DESTROY:
        argv.append("-no-reboot")
    argv += pm_args(dom)
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
    argv += controller_args(dom)
    argv += disk_args(dom)
    argv += chardev_args(dom)
    argv += interface_args(dom, by_alias, numbers)
    return argv
