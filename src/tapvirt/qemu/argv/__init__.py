"""The QEMU command line for a domain. PURE: Domain + network backends -> list[str].

Arguments follow libvirt 9.0 with QEMU 7.2 (JSON `-device`/`-blockdev`/`-netdev`), so
`tapvirt domxml-to-native` can be compared with `virsh domxml-to-native`; docs/argv.md
lists the intentional differences.

Layout: `command` builds the whole command (machine, cpu, memory, firmware, boot) and
calls one module per device family (`disk`, `interface`, `chardev`, ...) for its
arguments; `fds` numbers the fds QEMU inherits; `encode` writes option values. This
package's names are the public API (callers import from `tapvirt.qemu.argv`).
"""

from __future__ import annotations

from tapvirt.qemu.argv.command import build_argv, emulator
from tapvirt.qemu.argv.fds import FD_BASE, fd_layout, remap_actions
from tapvirt.qemu.argv.interface import (
    NetBackend,
    NetdevKind,
    interface_alias,
    link_state_commands,
    netdev,
    nic_device,
    nic_driver,
    socket_options,
)
from tapvirt.qemu.argv.machine import DEFAULT_MACHINE
from tapvirt.qemu.argv.peripherals import startup_commands

__all__ = [
    "DEFAULT_MACHINE",
    "FD_BASE",
    "NetBackend",
    "NetdevKind",
    "build_argv",
    "emulator",
    "fd_layout",
    "interface_alias",
    "link_state_commands",
    "netdev",
    "nic_device",
    "nic_driver",
    "remap_actions",
    "socket_options",
    "startup_commands",
]
