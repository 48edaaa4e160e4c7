"""`<cpu>`: mode, model (with fallback), topology, features with a policy, check,
migratable (libvirt 9.0 semantics), and `<vcpu>`'s topology rule.

Under TCG (`type='qemu'`) libvirt refuses host-passthrough ("... is not supported by
hypervisor"), and so does tapvirt. host-model is accepted: libvirt expands it from QEMU's
capabilities at start; tapvirt gives the guest QEMU's `max` CPU (TCG) or `host` (KVM) and
says so in a warning (`tapvirt.conf.warnings`). Model and feature names are checked
against QEMU 7.2's own lists (`qemu_cpus`), so QEMU never rejects them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING

from tapvirt.conf import decl
from tapvirt.conf import errors as E
from tapvirt.conf.domain.numa import Numa, format_numa, parse_numa
from tapvirt.conf.xmlout import Writer
from tapvirt.errors import define

if TYPE_CHECKING:
    from lxml import etree

    from tapvirt.conf.xml import Reader


class CpuMode(StrEnum):
    CUSTOM = "custom"
    HOST_MODEL = "host-model"
    HOST_PASSTHROUGH = "host-passthrough"
    MAXIMUM = "maximum"


class CpuMatch(StrEnum):
    MINIMUM = "minimum"
    EXACT = "exact"
    STRICT = "strict"


class CpuCheck(StrEnum):
    NONE = "none"
    PARTIAL = "partial"
    FULL = "full"


class ModelFallback(StrEnum):
    ALLOW = "allow"
    FORBID = "forbid"


class FeaturePolicy(StrEnum):
    FORCE = "force"
    REQUIRE = "require"
    OPTIONAL = "optional"
    DISABLE = "disable"
    FORBID = "forbid"

    @property
    def qemu(self) -> str | None:
        """The -cpu value: on, off, or nothing (optional: the model decides)."""
        if self in (FeaturePolicy.FORCE, FeaturePolicy.REQUIRE):
            return "on"
        if self in (FeaturePolicy.DISABLE, FeaturePolicy.FORBID):
            return "off"
        return None


class CacheMode(StrEnum):
    EMULATE = "emulate"
    PASSTHROUGH = "passthrough"
    DISABLE = "disable"


CPU_CACHE_INVALID = define(
    "cpu-cache-invalid",
    "a <cpu><cache> whose mode does not go with its level or with the CPU mode "
    "(libvirt's 'unsupported configuration' for CPU cache)",
    layer="conf",
)

_NAME = re.compile(r"[A-Za-z0-9_.+-]{1,64}\Z")


@dataclass(frozen=True)
class CpuModel:
    name: str = decl.text("text()", required=True)
    fallback: ModelFallback | None = decl.enum("@fallback", ModelFallback)
    vendor_id: str | None = decl.string(
        "@vendor_id", pattern=re.compile(r"[^,]{12}\Z"),
        fix="write exactly 12 characters, e.g. vendor_id='GenuineIntel'",
    )


@dataclass(frozen=True)
class Topology:
    sockets: int = decl.uint("@sockets", 1, 4096, required=True)
    cores: int = decl.uint("@cores", 1, 4096, required=True)
    threads: int = decl.uint("@threads", 1, 4096, required=True)
    dies: int | None = decl.uint("@dies", 1, 4096)  # last: the only optional one

    @property
    def total(self) -> int:
        return self.sockets * (self.dies or 1) * self.cores * self.threads


@dataclass(frozen=True, kw_only=True)  # level before the required mode, as libvirt writes
class CpuCache:
    """`<cache level='3' mode='emulate'/>`: the guest's view of the CPU caches."""

    level: int | None = decl.uint("@level", 0, 2**31 - 1)
    mode: CacheMode = decl.enum("@mode", CacheMode, required=True)


@dataclass(frozen=True)
class CpuFeature:
    policy: FeaturePolicy = decl.enum("@policy", FeaturePolicy, required=True)
    name: str = decl.string("@name", required=True, pattern=_NAME,
                            fix="write a CPUID flag name such as 'vmx' or 'avx2'")

    @property
    def qemu_name(self) -> str:
        return qemu_feature(self.name) or self.name


@dataclass(frozen=True)
class Cpu:
    mode: CpuMode = decl.enum("@mode", CpuMode, default=CpuMode.CUSTOM)
    match: CpuMatch | None = decl.enum("@match", CpuMatch)
    check: CpuCheck | None = decl.enum("@check", CpuCheck)
    migratable: bool | None = decl.onoff("@migratable")
    model: CpuModel | None = decl.element("model", CpuModel)
    topology: Topology | None = decl.element("topology", Topology)
    cache: CpuCache | None = decl.element("cache", CpuCache)
    features: tuple[CpuFeature, ...] = decl.elements("feature", CpuFeature)
    numa: Numa | None = None  # <numa>, parsed by conf.domain.numa (written last)


# libvirt's names that QEMU spells differently (virQEMUCapsCPUFeatureToQEMU)
_LIBVIRT_TO_QEMU = {"pclmuldq": "pclmulqdq"}


def qemu_feature(name: str) -> str | None:
    """QEMU's name for a libvirt CPU feature name, or None if QEMU 7.2 has no such flag."""
    from tapvirt.conf.domain.qemu_cpus import FEATURES

    for candidate in (_LIBVIRT_TO_QEMU.get(name, name), name.replace("_", "-")):
        if candidate in FEATURES:
            return candidate
    return None


def parse_cpu(r: Reader, el: etree._Element) -> Cpu:
    from tapvirt.conf.domain.qemu_cpus import MODELS

    values, extra = decl.read_fields(r, el, Cpu, extra_children=("numa",))
    numa = parse_numa(r, extra["numa"][0]) if "numa" in extra else None
    cpu = Cpu(**values, numa=numa)
    if cpu.migratable is not None and cpu.mode not in (
        CpuMode.HOST_PASSTHROUGH, CpuMode.MAXIMUM
    ):
        raise r.fail(
            E.INVALID_VALUE, el,
            "Attribute migratable is only allowed for 'host-passthrough' / 'maximum' CPU mode",
            "remove migratable= or use mode='maximum'", attr="migratable",
        )
    if cpu.model is not None:
        m_el = el.find("model")
        assert m_el is not None
        if cpu.mode in (CpuMode.HOST_PASSTHROUGH, CpuMode.MAXIMUM):
            raise r.fail(
                E.INVALID_VALUE, m_el, f"CPU mode '{cpu.mode}' takes no <model>",
                "remove <model> or use mode='custom'",
            )
        if cpu.model.name not in MODELS and not (
            cpu.mode is CpuMode.HOST_MODEL and cpu.model.fallback is ModelFallback.ALLOW
        ):
            raise r.fail(
                E.UNSUPPORTED_VALUE, m_el,
                f"CPU model '{cpu.model.name[:40]}' is not supported by hypervisor",
                "use a model QEMU 7.2 knows (`qemu-system-x86_64 -cpu help`), e.g. "
                "Skylake-Client, EPYC, Nehalem, or mode='maximum'",
            )
    if cpu.cache is not None:
        _check_cache(r, el, cpu)
    seen: dict[str, etree._Element] = {}
    for f_el, feat in zip(el.findall("feature"), cpu.features, strict=True):
        if feat.name in seen:
            raise r.fail(
                E.DUPLICATE_ELEMENT, f_el, f"CPU feature '{feat.name}' specified more than once",
                "keep one <feature> per name",
            )
        seen[feat.name] = f_el
        if qemu_feature(feat.name) is None:
            raise r.fail(
                E.UNSUPPORTED_VALUE, f_el, f"unknown CPU feature: {feat.name[:40]}",
                "use a flag QEMU 7.2 knows (`qemu-system-x86_64 -cpu help`, 'Recognized "
                "CPUID flags')", attr="name",
            )
    return cpu


def _check_cache(r: Reader, el: etree._Element, cpu: Cpu) -> None:
    """libvirt's virCPUDefParseXMLCache and qemuValidateDomainDefCpu, same messages."""
    cache = cpu.cache
    assert cache is not None
    c_el = el.find("cache")
    assert c_el is not None
    if cache.level is not None and not 1 <= cache.level <= 3:
        raise r.fail(
            E.INVALID_VALUE, c_el, "invalid CPU cache level, must be in range [1,3]",
            "write level='3' (the only level QEMU can emulate) or leave level out",
            attr="level",
        )
    if cache.mode is CacheMode.EMULATE and cache.level != 3:
        raise r.fail(
            CPU_CACHE_INVALID, c_el,
            "CPU cache mode 'emulate' can only be used with level='3'",
            "write <cache level='3' mode='emulate'/>", attr="level",
        )
    if cache.mode is CacheMode.PASSTHROUGH and cpu.mode not in (
        CpuMode.HOST_PASSTHROUGH, CpuMode.MAXIMUM
    ):
        raise r.fail(
            CPU_CACHE_INVALID, c_el,
            "CPU cache mode 'passthrough' can only be used with 'host-passthrough' / "
            "'maximum' CPUs",
            "use <cpu mode='maximum'> (or host-passthrough under KVM), or "
            "<cache level='3' mode='emulate'/> with this CPU", attr="mode",
        )
    if cache.mode is not CacheMode.EMULATE and cache.level is not None:
        raise r.fail(
            CPU_CACHE_INVALID, c_el,
            f"unsupported CPU cache level for mode '{cache.mode}'",
            f"remove level= from <cache mode='{cache.mode}'/>", attr="level",
        )


def check_cpu(r: Reader, el: etree._Element, cpu: Cpu, *, kvm: bool, vcpus: int) -> None:
    """The rules that depend on the rest of the domain."""
    if cpu.mode is CpuMode.HOST_PASSTHROUGH and not kvm:
        raise r.fail(
            E.UNSUPPORTED_VALUE, el,
            "CPU mode 'host-passthrough' for x86_64 qemu domain on x86_64 host is not "
            "supported by hypervisor",
            "use mode='maximum' (everything QEMU's emulator can do) for <domain type='qemu'>, "
            "or <domain type='kvm'> on a host with /dev/kvm", attr="mode",
        )
    if cpu.topology is not None and cpu.topology.total != vcpus:
        t_el = el.find("topology")
        raise r.fail(
            E.INVALID_VALUE, t_el if t_el is not None else el,
            "CPU topology doesn't match maximum vcpu count",
            f"make sockets*dies*cores*threads ({cpu.topology.total}) equal to <vcpu> "
            f"({vcpus})",
        )


def format_cpu(cpu: Cpu, w: Writer) -> None:
    numa = cpu.numa
    decl.write(cpu, "cpu", w, 1,
               extra=None if numa is None else (lambda w2, d: format_numa(numa, w2, d)))
