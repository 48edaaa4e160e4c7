"""`<iothreads>`, `<cputune>`, `<numatune>`: the basics.

iothreads: a count, each one a QEMU iothread object (iothread1..N). cputune: accepted and
kept, but shares/period/quota/vcpupin need cgroups or pinning an unprivileged tapvirt does
not do: a warning says so (`tapvirt.conf.warnings`). numatune: `<memory mode nodeset>`
and `<memnode cellid mode nodeset>` with mode strict/preferred/interleave are QEMU's
host-nodes/policy on the memory backends (mbind works unprivileged for the nodes the
user's cpuset allows; `start` checks them against /proc/self/status Mems_allowed_list).
`placement='auto'` (libvirt asks numad for a nodeset at start) is accepted and kept, with
a warning: tapvirt has no numad to ask, so the memory is not bound (the kernel places
it). libvirt's placement rules: without placement= and nodeset=, the memory follows
`<vcpu placement>`; placement='static' needs a nodeset. Refused by name: mode='restrictive'
(cgroups only) and a nodeset with placement='auto' (libvirt drops it silently)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING

from tapvirt.conf import decl
from tapvirt.conf import errors as E
from tapvirt.conf.xml import clip
from tapvirt.conf.xmlout import IND, Writer

if TYPE_CHECKING:
    from lxml import etree

    from tapvirt.conf.xml import Reader

_CPUSET = re.compile(r"\^?[0-9]{1,5}(?:-[0-9]{1,5})?(?:,\^?[0-9]{1,5}(?:-[0-9]{1,5})?)*\Z")


@dataclass(frozen=True)
class VcpuPin:
    vcpu: int = decl.uint("@vcpu", 0, 4095, required=True)
    cpuset: str = decl.string("@cpuset", required=True, pattern=_CPUSET,
                              fix="list host CPUs like '0-3,6'")


@dataclass(frozen=True)
class CpuTune:
    shares: int | None = decl.uint("shares/text()", 2, 262144)
    period: int | None = decl.uint("period/text()", 1000, 1000000)
    quota: int | None = decl.uint("quota/text()", 1000, 17592186044415)
    vcpupins: tuple[VcpuPin, ...] = decl.elements("vcpupin", VcpuPin)
    emulatorpin: str | None = decl.string("emulatorpin/@cpuset", required=True,
                                          pattern=_CPUSET, fix="list host CPUs like '0-3,6'")


def parse_iothreads(r: Reader, el: etree._Element) -> int:
    r.shape(el, text=True)
    return r.uint(el, None, 1, 1024)


def format_iothreads(n: int, w: Writer) -> None:
    w(f"{IND}<iothreads>{n}</iothreads>")


def parse_cputune(r: Reader, el: etree._Element) -> CpuTune:
    return decl.read(r, el, CpuTune)


def format_cputune(ct: CpuTune, w: Writer) -> None:
    decl.write(ct, "cputune", w, 1)


class NumaMode(StrEnum):
    STRICT = "strict"
    PREFERRED = "preferred"
    INTERLEAVE = "interleave"
    RESTRICTIVE = "restrictive"

    @property
    def qemu_policy(self) -> str:
        return "bind" if self is NumaMode.STRICT else self.value


@dataclass(frozen=True)
class MemNode:
    cellid: int
    mode: NumaMode
    nodeset: tuple[int, ...]


@dataclass(frozen=True)
class NumaTune:
    mode: NumaMode | None = None  # <memory mode>; None: no <memory>
    nodeset: tuple[int, ...] = ()
    memnodes: tuple[MemNode, ...] = ()  # sorted by cellid
    # <memory placement='auto'>: numad's nodeset, which tapvirt does not ask for (nodeset
    # is then empty and the memory not bound)
    auto: bool = False

    def binding(self, cellid: int | None) -> tuple[NumaMode, tuple[int, ...]] | None:
        """The (mode, host nodes) for a guest cell (None: the whole RAM), like libvirt's
        virDomainNumatuneMaybeGetNodeset: the cell's memnode, else <memory>."""
        for m in self.memnodes:
            if m.cellid == cellid:
                return m.mode, m.nodeset
        if self.mode is not None and not self.auto:
            return self.mode, self.nodeset
        return None

    @property
    def host_nodes(self) -> tuple[int, ...]:
        nodes = set(self.nodeset)
        for m in self.memnodes:
            nodes.update(m.nodeset)
        return tuple(sorted(nodes))


def _mode(r: Reader, el: etree._Element) -> NumaMode:
    mode = r.enum(el, "mode", NumaMode) if el.get("mode") is not None else NumaMode.STRICT
    if mode is NumaMode.RESTRICTIVE:
        raise r.fail(
            E.UNSUPPORTED_VALUE, el,
            "mode='restrictive' binds memory with cgroups' cpuset.mems, which an "
            "unprivileged tapvirt cannot set", "use mode='strict' (QEMU binds the guest's "
            "memory itself) or remove the element", attr="mode")
    return mode


def _nodeset(r: Reader, el: etree._Element) -> tuple[int, ...]:
    from tapvirt.conf.domain.numa import parse_bitmap

    raw = el.get("nodeset")
    assert raw is not None
    nodes = parse_bitmap(r, el, "nodeset", raw, limit=1024)
    if not nodes:
        raise r.fail(E.INVALID_VALUE, el, f"Invalid value of 'nodeset': '{clip(raw)}'",
                     "name at least one host NUMA node, e.g. nodeset='0'", attr="nodeset")
    return nodes


def parse_numatune(r: Reader, el: etree._Element | None, vcpu_auto: bool) -> NumaTune | None:
    """`<numatune>` (None: absent) with libvirt's placement rules (virDomainNumatuneSet):
    `vcpu_auto` says `<vcpu placement='auto'>`, which an absent `<memory>` follows."""
    if el is None:
        return NumaTune(mode=NumaMode.STRICT, auto=True) if vcpu_auto else None
    found = r.shape(el, (), ("memory", "memnode"), multi=("memnode",))
    mode: NumaMode | None = None
    nodeset: tuple[int, ...] = ()
    auto = False
    if (m := r.one(found, "memory")) is not None:
        r.shape(m, ("mode", "nodeset", "placement"))
        placement = m.get("placement")
        if placement not in (None, "static", "auto"):
            raise r.fail(E.INVALID_VALUE, m, "Unsupported NUMA memory placement mode "
                         f"'{clip(placement)}'", "use placement='static' or 'auto'",
                         attr="placement")
        if placement is None:
            placement = "static" if m.get("nodeset") is not None or not vcpu_auto else "auto"
        mode = _mode(r, m)
        if placement == "auto":
            if m.get("nodeset") is not None:
                raise r.fail(
                    E.INVALID_VALUE, m, "nodeset= has no meaning with placement='auto' "
                    "(numad chooses the nodes; libvirt drops the nodeset silently)",
                    "remove nodeset=, or write placement='static'", attr="nodeset")
            auto = True
        elif m.get("nodeset") is None:
            raise r.fail(E.INVALID_VALUE, m, "nodeset for NUMA memory tuning must be set if "
                         "'placement' is 'static'",
                         "name the host nodes: <memory mode='strict' nodeset='0'/>, or write "
                         "placement='auto'", attr="nodeset")
        else:
            nodeset = _nodeset(r, m)
    elif vcpu_auto:
        mode, auto = NumaMode.STRICT, True
    memnodes: dict[int, MemNode] = {}
    for mn in found.get("memnode", []):
        r.shape(mn, ("cellid", "mode", "nodeset"), required_attrs=("cellid", "nodeset"))
        cellid = r.uint(mn, "cellid", 0, 2**31 - 1)
        if cellid in memnodes:
            raise r.fail(E.DUPLICATE_ELEMENT, mn,
                         f"Multiple memnode elements with cellid {cellid}",
                         "keep one <memnode> per guest cell")
        memnodes[cellid] = MemNode(cellid, _mode(r, mn), _nodeset(r, mn))
        if auto:
            raise r.fail(E.INVALID_VALUE, mn, "Per-node binding is not compatible with "
                         "automatic NUMA placement.",
                         "remove the <memnode> elements, or give <numatune><memory> a "
                         "nodeset and placement='static'")
    return NumaTune(mode=mode, nodeset=nodeset,
                    memnodes=tuple(memnodes[k] for k in sorted(memnodes)), auto=auto)


def check_numatune(r: Reader, el: etree._Element, nt: NumaTune, cells: int) -> None:
    mn_el = el.find("memnode")
    if mn_el is not None and cells == 0:
        raise r.fail(E.INVALID_VALUE, mn_el,
                     "Element 'memnode' is invalid without any guest NUMA cells",
                     "add <numa> cells to <cpu>, or use <memory nodeset> instead")
    for mn in nt.memnodes:
        if mn.cellid >= cells:
            raise r.fail(E.INVALID_VALUE, el,
                         f"Invalid 'cellid' attribute in memnode element: {mn.cellid}",
                         f"use a guest cell id below {cells}")


def format_numatune(nt: NumaTune, w: Writer) -> None:
    from tapvirt.conf.domain.numa import format_bitmap

    w(f"{IND}<numatune>")
    if nt.mode is not None and nt.auto:
        w(f"{IND * 2}<memory mode='{nt.mode}' placement='auto'/>")
    elif nt.mode is not None:
        w(f"{IND * 2}<memory mode='{nt.mode}' nodeset='{format_bitmap(nt.nodeset)}'/>")
    for m in nt.memnodes:
        w(f"{IND * 2}<memnode cellid='{m.cellid}' mode='{m.mode}' "
          f"nodeset='{format_bitmap(m.nodeset)}'/>")
    w(f"{IND}</numatune>")
