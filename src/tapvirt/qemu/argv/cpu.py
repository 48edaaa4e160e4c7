"""-cpu: the CPU model and the CPU properties other elements ask for (timers, features).

Without anything to say, no -cpu is written: QEMU's default (qemu64, qemu32 for i686) is
what libvirt writes for a domain without <cpu>."""

from __future__ import annotations

from tapvirt.conf.model import Domain
from tapvirt.qemu.argv.clock import timer_cpu_flags
from tapvirt.qemu.argv.features import feature_cpu_flags


def default_model(dom: Domain) -> str:
    return "qemu32" if dom.os.arch in ("i686", "i386") else "qemu64"


def cpu_args(dom: Domain) -> list[str]:
    flags = [*timer_cpu_flags(dom), *feature_cpu_flags(dom)]
    if not flags:
        return []
    return ["-cpu", ",".join([default_model(dom), *flags])]
