"""Facts about the machine type that several device families' arguments depend on."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tapvirt.conf.model import Domain

DEFAULT_MACHINE = "pc"


def machine_of(dom: Domain) -> str:
    return dom.os.machine or DEFAULT_MACHINE


def is_q35(dom: Domain) -> bool:
    """q35 (PCIe, built-in AHCI controller 'ide') rather than i440fx."""
    return "q35" in machine_of(dom)
