"""`<features>` and `<pm>`: -machine properties (vmport, smm, kernel_irqchip), CPU
properties (kvm-pv-eoi, hyperv enlightenments, kvm hidden, pmu) and the PM globals, as
libvirt 9.0 writes them (qemuAppendDomainFeaturesMachineParam, qemuBuildCpuCommandLine,
qemuBuildPMCommandLine)."""

from __future__ import annotations

from tapvirt.conf.domain.features import HYPERV_SWITCHES, HypervMode, IoapicDriver
from tapvirt.conf.model import Domain
from tapvirt.qemu.argv.machine import is_q35


def _sw(value: bool) -> str:
    return "on" if value else "off"


def machine_params(dom: Domain) -> str:
    f = dom.features
    out = ""
    if f.vmport is not None:
        out += f",vmport={_sw(f.vmport)}"
    if f.smm is not None:
        out += f",smm={_sw(f.smm)}"
    if f.ioapic is IoapicDriver.QEMU:
        out += ",kernel_irqchip=split"
    elif f.ioapic is IoapicDriver.KVM:
        out += ",kernel_irqchip=on"
    return out


def feature_cpu_flags(dom: Domain) -> list[str]:
    f = dom.features
    flags: list[str] = []
    if f.apic is not None and f.apic.eoi is not None:
        flags.append(f"kvm-pv-eoi={_sw(f.apic.eoi)}")
    h = f.hyperv
    if h is not None:
        if h.mode is HypervMode.PASSTHROUGH:
            flags.append("hv-passthrough=on")
        for name in HYPERV_SWITCHES:
            if getattr(h, name):
                flags.append(f"hv-{name.replace('_', '-')}=on")
            if name == "vapic" and h.spinlocks is not None and h.spinlocks.state:
                flags.append(f"hv-spinlocks={h.spinlocks.retries or 0:#x}")
            if name == "synic" and h.stimer is not None and h.stimer.state:
                flags.append("hv-stimer=on")
                if h.stimer.direct:
                    flags.append("hv-stimer-direct=on")
            if name == "reset" and h.vendor_id is not None and h.vendor_id.state:
                flags.append(f"hv-vendor-id={h.vendor_id.value or ''}")
    k = f.kvm
    if k is not None:
        if k.hidden:
            flags.append("kvm=off")
        if k.hint_dedicated:
            flags.append("kvm-hint-dedicated=on")
        if k.poll_control:
            flags.append("kvm-poll-control=on")
        if k.pv_ipi is False:
            flags.append("kvm-pv-ipi=off")
    if f.pmu is not None:
        flags.append(f"pmu={_sw(f.pmu)}")
    return flags


def pm_args(dom: Domain) -> list[str]:
    pm = dom.pm
    if pm is None:
        return []
    target = "ICH9-LPC" if is_q35(dom) else "PIIX4_PM"
    argv: list[str] = []
    if pm.suspend_to_mem is not None:
        argv += ["-global", f"{target}.disable_s3={int(not pm.suspend_to_mem)}"]
    if pm.suspend_to_disk is not None:
        argv += ["-global", f"{target}.disable_s4={int(not pm.suspend_to_disk)}"]
    return argv
