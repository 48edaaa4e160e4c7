"""`<maxMemory slots='N'>`: memory hotplug (libvirt 9.0's rules, QEMU 7.2's limits).

`<maxMemory>` is the most RAM the guest may ever have, `slots` how many memory devices
(`<devices><memory>`, `tapvirt.conf.devices.memory`) it may hold; QEMU gets
`-m size=INITIAL,slots=N,maxmem=MAX`. libvirt's validation is repeated here with its
messages (qemuDomainDefValidateMemoryHotplug, virDomainDefPostParseMemory): both the size
and the slots, at least one guest NUMA cell on x86, the maximum at least the memory, at
most as many devices as slots, each dimm slot and base once and below the count, a
target cell that exists (the devices then fit the hotplug space: <memory> is the cells
plus the devices, at most <maxMemory>). QEMU's own limits are checked before QEMU sees
them: at most 256 slots on x86 (ACPI), dimms only with ACPI on, and the hotplug area
plus the 64-bit PCI hole within the guest CPU's physical address bits (QEMU: "Address
space limit ... phys-bits too low (40)").
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from tapvirt.conf import errors as E
from tapvirt.conf.rules import MAX_MEMORY_KIB, UINT_RE, UNIT_BYTES
from tapvirt.conf.xml import clip
from tapvirt.errors import define

if TYPE_CHECKING:
    from collections.abc import Iterable

    from lxml import etree

    from tapvirt.conf.devices.memory import MemoryDevice
    from tapvirt.conf.xml import Reader

__all__ = ["MaxMemory", "check_hotplug", "parse_max_memory", "parse_size"]

_L = "conf"
MEMORY_HOTPLUG_NUMA = define(
    "memory-hotplug-numa",
    "memory hotplug (<maxMemory>) or a memory device without the guest NUMA cell it needs",
    layer=_L,
)
MEMORY_SLOTS = define(
    "memory-slots",
    "<maxMemory slots> missing or too many, or memory devices beyond or sharing its slots",
    layer=_L,
)
MEMORY_NEEDS_MAXMEMORY = define(
    "memory-needs-maxmemory", "a <devices><memory> device without <maxMemory>", layer=_L,
)
MEMORY_NEEDS_ACPI = define(
    "memory-needs-acpi", "a dimm in a guest without ACPI (QEMU hot-plugs dimms through ACPI)",
    layer=_L,
)
MAXMEMORY_ADDRESS_SPACE = define(
    "maxmemory-address-space",
    "<maxMemory> beyond what the guest CPU's physical address bits can reach",
    layer=_L,
)

QEMU_MAX_SLOTS = 256  # QEMU's ACPI_MAX_RAM_SLOTS (x86 pc and q35)
_GIB = 1 << 30
_AMD_HT_START = 0xFD00000000  # QEMU's AMD HyperTransport hole below 1 TiB
_AMD_ABOVE_1TB = 1 << 40
TCG_PHYS_BITS = 40  # QEMU's phys-bits for every x86_64 CPU model under TCG (and KVM's
# default for named models; only host-passthrough/maximum under KVM take the host's)
# QEMU 7.2's x86 CPU models of AMD's (qemu64, the default, is one): their guests get the
# HyperTransport hole, which moves RAM above 4 GiB to 1 TiB when it reaches the hole
_AMD_MODELS = ("qemu64", "athlon", "phenom", "Opteron", "EPYC")


@dataclass(frozen=True)
class MaxMemory:
    kib: int
    slots: int


def parse_size(r: Reader, el: etree._Element, attrs: Iterable[str] = ("unit",),
               unit: str = "KiB", *, zero: bool = False) -> int:
    """A libvirt scaled integer in KiB (rounded up, as libvirt does); zero is refused
    unless `zero`."""
    r.shape(el, attrs, text=True)
    unit = el.get("unit", unit)
    mult = UNIT_BYTES.get(unit.lower())
    if mult is None:
        raise r.fail(
            E.INVALID_MEMORY, el, f"unknown unit '{clip(unit)}' in <{el.tag}>",
            "use one of b, KiB, MiB, GiB, TiB, k, M, G, T, KB, MB, GB, TB", attr="unit",
        )
    raw = el.text or ""  # digits only, as libvirt's schema wants them
    if not UINT_RE.match(raw):
        raise r.fail(
            E.INVALID_MEMORY, el, f"malformed size {clip(raw)!r} in <{el.tag}>",
            f"write a whole number, e.g. <{el.tag} unit='MiB'>512</{el.tag}>",
        )
    value = (int(raw) if len(raw) <= 30 else MAX_MEMORY_KIB + 1) * mult
    kib = -(-value // 1024)  # libvirt rounds up to whole KiB
    if kib == 0 and not zero:
        raise r.fail(
            E.INVALID_MEMORY, el, f"<{el.tag}> must be larger than zero",
            f"write a size, e.g. <{el.tag} unit='MiB'>512</{el.tag}>",
        )
    if kib > MAX_MEMORY_KIB:
        raise r.fail(
            E.INVALID_MEMORY, el, f"<{el.tag}> is too large", "write a realistic size"
        )
    return kib


def parse_max_memory(r: Reader, el: etree._Element) -> MaxMemory:
    kib = parse_size(r, el, ("unit", "slots"))
    raw = el.get("slots")
    if raw is not None and not UINT_RE.match(raw):
        raise r.fail(E.INVALID_VALUE, el, "Failed to parse memory slot count",
                     "write slots='N' with a whole number, e.g. slots='16'", attr="slots")
    slots = int(raw) if raw is not None and len(raw) <= 10 else (0 if raw is None else -1)
    if slots == 0:
        raise r.fail(
            MEMORY_SLOTS, el,
            "both maximum memory size and memory slot count must be specified",
            "add slots='N' to <maxMemory> (how many memory devices the guest may hold, "
            "e.g. slots='16')", attr="slots")
    if not 0 < slots <= QEMU_MAX_SLOTS:
        raise r.fail(
            MEMORY_SLOTS, el, f"QEMU supports at most {QEMU_MAX_SLOTS} memory slots on x86 "
            f"(\"unsupported amount of memory slots: {clip(raw or '')}\")",
            f"write slots='{QEMU_MAX_SLOTS}' or fewer", attr="slots")
    return MaxMemory(kib, slots)


def align_mib(kib: int) -> int:
    """libvirt's qemuDomainAlignMemorySizes on x86: 1 MiB for RAM and <maxMemory>."""
    return -(-kib // 1024) * 1024


def _physical_reach(mm: MaxMemory, initial_kib: int, machine: str | None,
                    cpu_model: str | None) -> tuple[int, int, int]:
    """(the highest guest physical address QEMU 7.2 uses, the highest it would use without
    the 1 TiB move below, the limit that one must stay under) for an x86_64 guest with
    memory hotplug: pc_memory_init and pc_max_used_gpa. RAM below 4 GiB up to the PCI hole
    (3.5 GiB on pc, 2 GiB on q35 when above 2.75 GiB), the rest from 4 GiB, or from 1 TiB
    on AMD CPU models when the area reaches the HyperTransport hole (machine types 7.1 and
    later); then the hotplug area (maxmem - RAM + 1 GiB per slot, 1 GiB aligned) and the
    64-bit PCI hole (2 GiB on pc, 32 GiB on q35)."""
    q35 = "q35" in (machine or "")
    ram = initial_kib * 1024
    low_limit = (0x80000000 if ram >= 0xB0000000 else 0xB0000000) if q35 else (
        0xE0000000 if ram >= 0xE0000000 else ram)
    above = max(0, ram - low_limit)
    hole64 = (32 if q35 else 2) * _GIB

    def reach(start: int) -> int:
        base = -(-(start + above) // _GIB) * _GIB
        size = align_mib(mm.kib) * 1024 - ram + mm.slots * _GIB
        return -(-(base + size) // _GIB) * _GIB + hole64 - 1

    top = fit = reach(1 << 32)
    limit = (1 << TCG_PHYS_BITS) - 1
    amd = cpu_model is None or cpu_model.startswith(_AMD_MODELS)
    if amd and not (machine is not None and _machine_before_7_1(machine)):
        if top >= _AMD_HT_START:
            top = reach(_AMD_ABOVE_1TB)
        limit = _AMD_HT_START - 1  # what fits without the move
    return top, fit, limit


def _machine_before_7_1(machine: str) -> bool:
    import re

    m = re.search(r"-(\d+)\.(\d+)$", machine)
    return m is not None and (int(m.group(1)), int(m.group(2))) < (7, 1)


def check_hotplug(
    r: Reader,
    max_el: etree._Element | None,
    mm: MaxMemory | None,
    *,
    memory_kib: int,
    cells: int,
    devices: tuple[MemoryDevice, ...],
    device_els: list[etree._Element],
    phys_bits_40: bool,
    acpi: bool,
    machine: str | None,
    cpu_model: str | None,
) -> None:
    """libvirt's define-time checks of <maxMemory> with the memory devices; `memory_kib`
    is the initial RAM (the NUMA cells' sum), `cells` how many cells there are."""
    hotplug_kib = sum(d.size_kib for d in devices)
    if mm is None or max_el is None:
        if device_els:
            raise r.fail(
                MEMORY_NEEDS_MAXMEMORY, device_els[0],
                "cannot use/hotplug a memory device when domain 'maxMemory' is not defined",
                "add <maxMemory slots='16' unit='GiB'>N</maxMemory> (N at least <memory> "
                "plus the devices' sizes) before <memory>")
        return
    if cells == 0:
        raise r.fail(
            MEMORY_HOTPLUG_NUMA, max_el,
            "At least one numa node has to be configured when enabling memory hotplug",
            f"add <cpu><numa><cell id='0' cpus='0-N' memory='{memory_kib}' unit='KiB'/>"
            "</numa></cpu> (QEMU would make one NUMA node silently)")
    total = memory_kib + hotplug_kib
    if mm.kib < total:
        raise r.fail(
            E.INVALID_MEMORY, max_el,
            "maximum memory size must be equal or greater than the actual memory size",
            f"make <maxMemory> at least {total} KiB (the NUMA cells plus the memory "
            "devices)")
    if len(devices) > mm.slots:
        raise r.fail(
            MEMORY_SLOTS, device_els[mm.slots],
            f"memory device count '{len(devices)}' exceeds slots count '{mm.slots}'",
            f"raise <maxMemory slots> to {len(devices)} or remove memory devices")
    slots: dict[int, etree._Element] = {}
    bases: dict[int, etree._Element] = {}
    for el, dev in zip(device_els, devices, strict=True):
        if dev.node is None and dev.needs_node:
            raise r.fail(
                MEMORY_HOTPLUG_NUMA, el,
                "target NUMA node needs to be specified for memory device",
                "add <node>0</node> (a guest NUMA cell id) inside <target>")
        if dev.node is not None and dev.node >= cells:
            raise r.fail(
                MEMORY_HOTPLUG_NUMA, el,
                f"can't add memory backend for guest node '{dev.node}' as the guest has only "
                f"'{cells}' NUMA nodes configured",
                f"use a <node> below {cells}, or add that cell to <cpu><numa>")
        if dev.slot is not None:
            if dev.slot >= mm.slots:
                raise r.fail(
                    MEMORY_SLOTS, el,
                    f"memory device slot '{dev.slot}' exceeds slots count '{mm.slots}'",
                    f"use a slot below {mm.slots}, or raise <maxMemory slots>")
            if dev.slot in slots:
                raise r.fail(
                    MEMORY_SLOTS, el, f"memory device slot '{dev.slot}' is already being "
                    "used by another memory device",
                    f"give it another slot (the other is at line {slots[dev.slot].sourceline})"
                    ", or leave slot= out to have one assigned")
            slots[dev.slot] = el
        if dev.base:
            if dev.base in bases:
                raise r.fail(
                    MEMORY_SLOTS, el, f"memory device base '0x{dev.base:x}' is already "
                    "being used by another memory device",
                    "give it another base, or leave base= out (QEMU places it)")
            bases[dev.base] = el
    if any(d.on_slot for d in devices) and not acpi:
        raise r.fail(
            MEMORY_NEEDS_ACPI, next(e for e, d in zip(device_els, devices, strict=True)
                                    if d.on_slot),
            "a pc-dimm needs the guest's ACPI; QEMU would refuse to start (\"memory hotplug "
            "is not enabled: missing acpi device or acpi disabled\")",
            "add <features><acpi/></features>")
    if phys_bits_40:
        top, fit, limit = _physical_reach(mm, align_mib(memory_kib), machine, cpu_model)
        if top > (1 << TCG_PHYS_BITS) - 1:
            most = max(0, (mm.kib * 1024 - (fit - limit)) // _GIB - 1)
            raise r.fail(
                MAXMEMORY_ADDRESS_SPACE, max_el,
                f"<maxMemory> {mm.kib} KiB needs guest physical addresses up to 0x{top:x}, "
                f"beyond the {TCG_PHYS_BITS} physical address bits of QEMU's x86_64 "
                f"CPU (any model under TCG, named models under KVM); QEMU would refuse "
                f"to start (\"phys-bits too low ({TCG_PHYS_BITS})\")",
                f"make <maxMemory> at most {most} GiB, e.g. <maxMemory slots='{mm.slots}' "
                f"unit='GiB'>{min(most, 64)}</maxMemory>")
