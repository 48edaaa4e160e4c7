"""libvirt's defaults and implicit devices, in one post-parse step (libvirt's
qemuDomainDefPostParse / qemuDomainAssignAddresses): applied after every element is parsed
and checked, before the definition is stored, so `dumpxml` shows what the guest gets.

Each step is a pure `Domain -> Domain` function; `STEPS` runs in order. A step says why
libvirt does it. Defaults that belong to one attribute (e.g. the NIC model) stay beside
the element in its family module; what depends on the whole domain (implicit devices,
addresses, names) is here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING

from tapvirt.conf.devices.disk import auto_alias

if TYPE_CHECKING:
    from tapvirt.conf.model import Domain

__all__ = ["STEPS", "apply_defaults"]


def assign_aliases(dom: Domain) -> Domain:
    """Every device gets its stable name (libvirt's qemuAssignDeviceAliases): disks by bus and
    target (virtio-disk0, sata0-0-0), interfaces by position (net0). A user alias (`ua-...`)
    is kept. QEMU ids, QMP commands and the live XML use these names."""
    d = dom.devices
    disks = tuple(
        disk if disk.alias is not None
        else replace(disk, alias=auto_alias(disk.target_bus, disk.target_dev))
        for disk in d.disks
    )
    ifaces = tuple(
        iface if iface.alias is not None else replace(iface, alias=f"net{n}")
        for n, iface in enumerate(d.interfaces)
    )
    if disks == d.disks and ifaces == d.interfaces:
        return dom
    return replace(dom, devices=replace(d, disks=disks, interfaces=ifaces))


STEPS: tuple[Callable[[Domain], Domain], ...] = (assign_aliases,)


def apply_defaults(dom: Domain) -> Domain:
    """The post-parse step: every default and implicit device, in order."""
    for step in STEPS:
        dom = step(dom)
    return dom
