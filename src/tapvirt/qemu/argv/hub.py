"""QEMU arguments of `<hub type='usb'>`: `-device usb-hub` with its USB port, after the
controllers and before the CCID controllers and disks (qemuBuildHubCommandLine). PURE."""

from __future__ import annotations

from tapvirt.conf.model import Domain
from tapvirt.qemu.argv.controller import address_props
from tapvirt.qemu.argv.encode import jsonarg


def hub_args(dom: Domain) -> list[str]:
    argv: list[str] = []
    for n, h in enumerate(dom.devices.hubs):
        obj = {"driver": "usb-hub", "id": h.alias or f"hub{n}", **address_props(dom, h.address)}
        argv += ["-device", jsonarg(obj)]
    return argv
