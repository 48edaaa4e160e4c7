"""-cpu and -smp: the CPU model (from `<cpu>`), the CPU properties other elements ask for
(timers, features), and the vCPU topology, as libvirt 9.0 writes them
(qemuBuildCpuModelArgStr, qemuBuildCpuCommandLine, qemuBuildSmpCommandLine).

Without a `<cpu>` and without flags, no -cpu is written: QEMU's default (qemu64, qemu32
for i686) is what libvirt writes then. host-model: QEMU's `max` CPU under TCG, `host`
under KVM (libvirt expands it from QEMU's capabilities; a warning says so).
`<cache>` adds l3-cache / host-cache-info last, after the feature flags, as libvirt does.
"""

from __future__ import annotations

from tapvirt.conf.domain.cpu import CacheMode, CpuMode
from tapvirt.conf.model import Domain, DomainType
from tapvirt.qemu.argv.clock import timer_cpu_flags
from tapvirt.qemu.argv.features import feature_cpu_flags


def default_model(dom: Domain) -> str:
    return "qemu32" if dom.os.arch in ("i686", "i386") else "qemu64"


def _model(dom: Domain) -> list[str]:
    cpu = dom.cpu
    if cpu is None:
        return []
    kvm = dom.type is DomainType.KVM
    out: list[str] = []
    if cpu.mode in (CpuMode.HOST_PASSTHROUGH, CpuMode.MAXIMUM):
        out.append("host" if cpu.mode is CpuMode.HOST_PASSTHROUGH else "max")
        if cpu.migratable is not None:
            out.append(f"migratable={'on' if cpu.migratable else 'off'}")
    elif cpu.mode is CpuMode.HOST_MODEL:
        out.append("host" if kvm else "max")
    elif cpu.model is not None:
        out.append(cpu.model.name)
    if cpu.model is not None and cpu.model.vendor_id is not None:
        out.append(f"vendor={cpu.model.vendor_id}")
    for f in cpu.features:
        if f.policy.qemu is not None:
            out.append(f"{f.qemu_name}={f.policy.qemu}")
    return out


def _cache(dom: Domain) -> list[str]:
    """`<cache>`: l3-cache (every x86 model) and host-cache-info (only QEMU's `host` and
    `max` CPUs have it, and the rules allow passthrough only with those)."""
    cpu = dom.cpu
    if cpu is None or cpu.cache is None:
        return []
    mode = cpu.cache.mode
    out = []
    if mode is CacheMode.EMULATE:
        out.append("l3-cache=on")
    elif mode is CacheMode.PASSTHROUGH:
        out.append("host-cache-info=on")
    if mode is not CacheMode.PASSTHROUGH and cpu.mode in (
        CpuMode.HOST_PASSTHROUGH, CpuMode.MAXIMUM
    ):
        out.append("host-cache-info=off")
    if mode is not CacheMode.EMULATE:
        out.append("l3-cache=off")
    return out


def cpu_args(dom: Domain) -> list[str]:
    parts = [*_model(dom), *timer_cpu_flags(dom), *feature_cpu_flags(dom), *_cache(dom)]
    if not parts:
        return []
    if dom.cpu is None or (dom.cpu.mode is CpuMode.CUSTOM and dom.cpu.model is None):
        parts.insert(0, default_model(dom))
    return ["-cpu", ",".join(parts)]


def smp_args(dom: Domain) -> list[str]:
    """`-smp N[,maxcpus=M],sockets=S,cores=C,threads=T`: without a <topology> every vCPU
    is a socket (libvirt's choice; QEMU 7.2 alone would make them cores)."""
    online = dom.vcpus_current or dom.vcpus
    opt = str(online)
    if online != dom.vcpus:
        opt += f",maxcpus={dom.vcpus}"
    t = dom.cpu.topology if dom.cpu is not None else None
    if t is not None:
        opt += f",sockets={t.sockets},dies={t.dies or 1},cores={t.cores},threads={t.threads}"
    else:
        opt += f",sockets={dom.vcpus},cores=1,threads=1"
    return ["-smp", opt]
