"""`<features>`: acpi, apic, pae, hyperv, kvm, pmu, vmport, smm, ioapic (libvirt 9.0).

Declared in libvirt's format order. A feature switch with `state` keeps it as given; the
rules below are libvirt's (hyperv spinlocks and vendor_id)."""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import TYPE_CHECKING

from tapvirt.conf import decl
from tapvirt.conf import errors as E
from tapvirt.conf.xmlout import Writer

if TYPE_CHECKING:
    from lxml import etree

    from tapvirt.conf.xml import Reader


class HypervMode(StrEnum):
    CUSTOM = "custom"
    PASSTHROUGH = "passthrough"


class IoapicDriver(StrEnum):
    QEMU = "qemu"
    KVM = "kvm"


@dataclass(frozen=True)
class Apic:
    eoi: bool | None = decl.onoff("@eoi")


@dataclass(frozen=True)
class HypervSpinlocks:
    state: bool = decl.onoff("@state", required=True)
    retries: int | None = decl.uint("@retries", 0, 2**32 - 1)


@dataclass(frozen=True)
class HypervStimer:
    state: bool = decl.onoff("@state", required=True)
    direct: bool | None = decl.onoff("direct/@state", required=True)


@dataclass(frozen=True)
class HypervVendorId:
    state: bool = decl.onoff("@state", required=True)
    value: str | None = decl.string(
        "@value", pattern=re.compile(r"[^,]{0,12}\Z"),
        fix="HyperV vendor_id value must not be more than 12 characters (and no comma)",
    )


@dataclass(frozen=True)
class Hyperv:
    mode: HypervMode = decl.enum("@mode", HypervMode, default=HypervMode.CUSTOM)
    relaxed: bool | None = decl.onoff("relaxed/@state", required=True)
    vapic: bool | None = decl.onoff("vapic/@state", required=True)
    spinlocks: HypervSpinlocks | None = decl.element("spinlocks", HypervSpinlocks)
    vpindex: bool | None = decl.onoff("vpindex/@state", required=True)
    runtime: bool | None = decl.onoff("runtime/@state", required=True)
    synic: bool | None = decl.onoff("synic/@state", required=True)
    stimer: HypervStimer | None = decl.element("stimer", HypervStimer)
    reset: bool | None = decl.onoff("reset/@state", required=True)
    vendor_id: HypervVendorId | None = decl.element("vendor_id", HypervVendorId)
    frequencies: bool | None = decl.onoff("frequencies/@state", required=True)
    reenlightenment: bool | None = decl.onoff("reenlightenment/@state", required=True)
    tlbflush: bool | None = decl.onoff("tlbflush/@state", required=True)
    ipi: bool | None = decl.onoff("ipi/@state", required=True)
    evmcs: bool | None = decl.onoff("evmcs/@state", required=True)
    avic: bool | None = decl.onoff("avic/@state", required=True)


# the on/off enlightenments, in libvirt's (and QEMU's -cpu) order, by field name
HYPERV_SWITCHES = (
    "relaxed", "vapic", "vpindex", "runtime", "synic", "reset", "frequencies",
    "reenlightenment", "tlbflush", "ipi", "evmcs", "avic",
)


@dataclass(frozen=True)
class Kvm:
    hidden: bool | None = decl.onoff("hidden/@state", required=True)
    hint_dedicated: bool | None = decl.onoff("hint-dedicated/@state", required=True)
    poll_control: bool | None = decl.onoff("poll-control/@state", required=True)
    pv_ipi: bool | None = decl.onoff("pv-ipi/@state", required=True)


@dataclass(frozen=True)
class Features:
    acpi: bool = decl.flag("acpi")
    apic: Apic | None = decl.element("apic", Apic)
    pae: bool = decl.flag("pae")
    hyperv: Hyperv | None = decl.element("hyperv", Hyperv)
    kvm: Kvm | None = decl.element("kvm", Kvm)
    pmu: bool | None = decl.onoff("pmu/@state", required=True)
    vmport: bool | None = decl.onoff("vmport/@state", required=True)
    # <smm/> without state is on (libvirt); written with state='on'
    smm: bool | None = decl.onoff("smm/@state")
    ioapic: IoapicDriver | None = decl.enum("ioapic/@driver", IoapicDriver, required=True)


def parse_features(r: Reader, el: etree._Element) -> Features:
    f = decl.read(r, el, Features)
    if f.smm is None and el.find("smm") is not None:
        f = replace(f, smm=True)
    if f.hyperv is not None:
        _check_hyperv(r, el.find("hyperv"), f.hyperv)
    return f


def _check_hyperv(r: Reader, el: etree._Element | None, h: Hyperv) -> None:
    assert el is not None
    if h.spinlocks is not None and h.spinlocks.state:
        where = el.find("spinlocks")
        assert where is not None
        if h.spinlocks.retries is None:
            raise r.fail(E.MISSING_ATTRIBUTE, where, "missing HyperV spinlock retry count",
                         "add retries='8191' (at least 4095)")
        if h.spinlocks.retries < 4095:
            raise r.fail(E.INVALID_VALUE, where,
                         "HyperV spinlock retry count must be at least 4095",
                         "write retries='4095' or more", attr="retries")
    if h.vendor_id is not None and h.vendor_id.state and not h.vendor_id.value:
        where = el.find("vendor_id")
        assert where is not None
        raise r.fail(E.MISSING_ATTRIBUTE, where,
                     "missing 'value' attribute for HyperV feature 'vendor_id'",
                     "add value='KVM Hv' (up to 12 characters)")


def check_features(r: Reader, el: etree._Element, f: Features, kvm: bool) -> None:
    """The rules that depend on the rest of the domain (called once it is parsed)."""
    h = f.hyperv
    if not kvm and h is not None and h.mode is HypervMode.CUSTOM and h.vpindex:
        where = el.find("hyperv/vpindex")
        raise r.fail(
            E.UNSUPPORTED_VALUE, where if where is not None else el,
            "the HyperV VP_INDEX enlightenment needs KVM: QEMU under TCG (type='qemu') "
            "refuses it (\"kernel doesn't allow setting HyperV VP_INDEX\")",
            "remove <vpindex state='on'/> from <hyperv>, or use <domain type='kvm'>",
        )


def format_features(f: Features, w: Writer) -> None:
    if f != Features():
        decl.write(f, "features", w, 1)
