"""Warnings about a valid definition: what is accepted and kept but has no effect for an
unprivileged QEMU, or is carried out differently from libvirt. `validate`, `define` and
`check` show them (the rule "nothing silently dropped").

Pure and derived from the model alone, so a cached definition gives the same warnings
as a freshly parsed one. Add a rule: a function `Domain -> Iterable[ConfWarning]` in
`RULES`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from tapvirt.conf import errors as E

if TYPE_CHECKING:
    from tapvirt.conf.model import Domain
    from tapvirt.errors import ErrorCode

__all__ = ["RULES", "ConfWarning", "domain_warnings"]


@dataclass(frozen=True)
class ConfWarning:
    code: ErrorCode
    subject: str  # the element, e.g. "/domain/vcpu/@cpuset"
    cause: str
    fix: str

    @property
    def message(self) -> str:
        return f"{self.subject}: {self.cause}"

    def render(self) -> str:
        return f"warning[{self.code.code}]: {self.message}\n  fix: {self.fix}"

    def to_json(self) -> dict[str, Any]:
        return {"code": self.code.code, "severity": "warning", "subject": self.subject,
                "message": self.message, "fix": self.fix}


def _cpu(dom: Domain) -> Iterable[ConfWarning]:
    from tapvirt.conf.domain.cpu import CpuMode

    if dom.cpu is not None and dom.cpu.mode is CpuMode.HOST_MODEL:
        given = "QEMU's 'host' CPU (KVM)" if dom.type == "kvm" else "QEMU's 'max' CPU (TCG)"
        yield ConfWarning(
            E.SUBSTITUTED, "/domain/cpu/@mode",
            f"host-model: the guest gets {given}; libvirt would expand host-model into a "
            "named CPU model from QEMU's capabilities at start",
            "name the model with mode='custom' (<model>Skylake-Client</model>) for the exact "
            "libvirt CPU, or use mode='maximum' to say what tapvirt does",
        )


def _vcpu(dom: Domain) -> Iterable[ConfWarning]:
    if dom.vcpu_cpuset is not None:
        yield ConfWarning(
            E.NO_EFFECT, "/domain/vcpu/@cpuset",
            f"cpuset='{dom.vcpu_cpuset}' is kept but not applied: tapvirt does not pin QEMU "
            "(libvirt pins through cgroups or sched_setaffinity)",
            "remove cpuset=, or start tapvirt under `taskset -c CPUS` to pin it",
        )


def _numad(dom: Domain) -> Iterable[ConfWarning]:
    if dom.vcpu_placement_auto:
        yield ConfWarning(
            E.NO_EFFECT, "/domain/vcpu/@placement",
            "placement='auto' is kept but has no effect: libvirt would ask numad for the "
            "host CPUs to pin QEMU to; tapvirt has no numad to ask and pins nothing (the "
            "kernel's scheduler places the vCPUs)",
            "write placement='static' (optionally with cpuset=), or start tapvirt under "
            "`numactl --cpunodebind=N` to choose the nodes yourself",
        )
    if dom.numatune is not None and dom.numatune.auto:
        yield ConfWarning(
            E.NO_EFFECT, "/domain/numatune/memory/@placement",
            "placement='auto' is kept but has no effect: libvirt would bind the guest's "
            "memory to the nodes numad advises; tapvirt has no numad to ask, so the memory "
            "is not bound (the kernel places it)",
            "name the host nodes: <memory mode='strict' nodeset='0'/>",
        )


def _cgroups(dom: Domain) -> Iterable[ConfWarning]:
    if dom.resource is not None:
        yield ConfWarning(
            E.NO_EFFECT, "/domain/resource",
            "<resource> is kept but has no effect: tapvirt creates no cgroup partition for "
            "the guest (libvirt would place QEMU into it)",
            "remove <resource>, or start tapvirt inside the cgroup you want "
            "(e.g. `systemd-run --user --scope -p Slice=...`)",
        )
    if dom.cputune is not None:
        yield ConfWarning(
            E.NO_EFFECT, "/domain/cputune",
            "<cputune> is kept but has no effect: CPU shares, quotas and pinning need the "
            "cgroups and affinity libvirt sets up",
            "remove <cputune>, or use `systemd-run --user -p CPUQuota=...` / `taskset`",
        )


def _memory(dom: Domain) -> Iterable[ConfWarning]:
    if dom.memory_backing is not None and dom.memory_backing.discard:
        yield ConfWarning(
            E.NO_EFFECT, "/domain/memoryBacking/discard",
            "<discard/> is kept but has no effect: QEMU discards memory only for file-backed "
            "RAM, which tapvirt does not use (libvirt ignores it the same way)",
            "remove <discard/>",
        )
    cells = dom.cpu.numa.cells if dom.cpu is not None and dom.cpu.numa is not None else ()
    for c in cells:
        if c.discard:
            yield ConfWarning(
                E.NO_EFFECT, f"/domain/cpu/numa/cell[@id='{c.id}']/@discard",
                "discard='yes' is kept but has no effect: QEMU discards memory only for "
                "file-backed RAM, which tapvirt does not use for guest cells",
                "remove discard='yes'")
    for n, m in enumerate(dom.devices.memories, start=1):
        if m.discard:
            yield ConfWarning(
                E.NO_EFFECT, f"/domain/devices/memory[{n}]/@discard",
                "discard='yes' is kept but has no effect: QEMU discards memory only for "
                "file-backed RAM, which tapvirt does not use for memory devices",
                "remove discard='yes'")


def _seclabel(dom: Domain) -> Iterable[ConfWarning]:
    from tapvirt.conf.domain.seclabel import SeclabelType

    if any(sl.type is SeclabelType.DYNAMIC for sl in dom.seclabels):
        yield ConfWarning(
            E.NO_EFFECT, "/domain/seclabel",
            "<seclabel type='dynamic'> is kept but has no effect: tapvirt has no security "
            "driver (QEMU runs as you, without capabilities)",
            "write <seclabel type='none'/>, or confine the tapvirt process itself",
        )


def _ignored(dom: Domain) -> Iterable[ConfWarning]:
    if dom.ignored_id is not None:
        yield ConfWarning(
            E.NO_EFFECT, "/domain/@id",
            f"id='{dom.ignored_id}' is the id of a running domain; libvirt and tapvirt "
            "ignore it in a definition (it is not kept)",
            "remove id= from <domain>",
        )
    if dom.idmap is not None:
        yield ConfWarning(
            E.NO_EFFECT, "/domain/idmap",
            "<idmap> is kept but has no effect: only libvirt's LXC driver maps ids; a "
            "QEMU guest has no user namespace to map",
            "remove <idmap>",
        )


RULES: tuple[Callable[[Domain], Iterable[ConfWarning]], ...] = (
    _cpu, _vcpu, _numad, _cgroups, _memory, _seclabel, _ignored,
)


def domain_warnings(dom: Domain) -> list[ConfWarning]:
    return [w for rule in RULES for w in rule(dom)]
