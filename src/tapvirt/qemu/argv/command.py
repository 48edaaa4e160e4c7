"""The whole QEMU command: machine, accelerator, memory, cpus, firmware/kernel, boot
order, the monitor; then each device family's arguments from its module. PURE."""

from __future__ import annotations

from collections.abc import Sequence

from tapvirt.conf.model import Domain, DomainType, LifecycleAction
from tapvirt.qemu.argv.bootorder import device_boot_order
from tapvirt.qemu.argv.chardev import chardev_args
from tapvirt.qemu.argv.clock import rtc_args
from tapvirt.qemu.argv.controller import controller_args
from tapvirt.qemu.argv.cpu import cpu_args, smp_args
from tapvirt.qemu.argv.disk import disk_args
from tapvirt.qemu.argv.encode import opt
from tapvirt.qemu.argv.fds import FD_BASE, fd_layout
from tapvirt.qemu.argv.features import machine_params, pm_args
from tapvirt.qemu.argv.firmware import (
    boot_args,
    firmware_args,
    firmware_machine_params,
    pflash_args,
    smbios_args,
)
from tapvirt.qemu.argv.hub import hub_args
from tapvirt.qemu.argv.interface import NetBackend, interface_args
from tapvirt.qemu.argv.iommu import iommu_args
from tapvirt.qemu.argv.machine import machine_of
from tapvirt.qemu.argv.memory import (
    iothread_args,
    memory_args,
    memory_device_args,
    memory_machine_params,
    numa_args,
)
from tapvirt.qemu.argv.peripherals import peripheral_args, runtime_dir_of


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
    display_ports: Sequence[int] = (),
    now: float | None = None,
) -> list[str]:
    """The whole QEMU command line. Starts paused (-S): the launcher sends set_link, cont.

    display_ports: the TCP ports the launcher chose for VNC/SPICE displays with autoport
    on an address, in order; 5900 when not given (a dry run).
    `now` (seconds since 1970, default the current time) fixes a variable <clock>."""
    dom = device_boot_order(dom)
    numbers: dict[int, int | str] = dict(fd_layout(backends, fd_base))
    by_alias = {b.alias: b for b in backends}
    argv = [emulator(dom), "-name", f"guest={opt(dom.name)}", "-S"]
    machine = machine_of(dom)
    acpi = "" if dom.features.acpi else ",acpi=off"
    argv += pflash_args(dom)
    argv += ["-machine", f"{machine},usb=off{acpi}{machine_params(dom)}"
                         f"{firmware_machine_params(dom)}"
                         f"{memory_machine_params(dom)}"]
    argv += ["-accel", "kvm" if dom.type is DomainType.KVM else "tcg"]
    argv += cpu_args(dom)
    argv += memory_args(dom)
    argv += smp_args(dom)
    argv += numa_args(dom)
    argv += iothread_args(dom)
    argv += ["-uuid", dom.uuid]
    argv += ["-no-user-config", "-nodefaults", "-display", "none"]
    argv += ["-chardev", f"socket,id=charmonitor,path={opt(qmp_socket)},server=on,wait=off",
             "-mon", "chardev=charmonitor,id=monitor,mode=control"]
    argv += firmware_args(dom)
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
    argv += boot_args(dom, per_device_boot)
    argv += smbios_args(dom)
    argv += iommu_args(dom)
    argv += controller_args(dom)
    argv += memory_device_args(dom)
    argv += hub_args(dom)
    argv += disk_args(dom)
    argv += chardev_args(dom)
    argv += interface_args(dom, by_alias, numbers)
    argv += peripheral_args(dom, runtime_dir_of(qmp_socket), display_ports)
    return argv
