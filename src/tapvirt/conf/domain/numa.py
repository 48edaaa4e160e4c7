"""`<cpu><numa>`: guest NUMA cells (libvirt 9.0's virDomainNumaDefParseXML semantics).

A cell: `id` (0..N-1, each once, any order; the cell's index when absent), `cpus`
(libvirt's bitmap syntax, written back canonical), `memory` + `unit` (required),
`memAccess` (shared|private), `discard` (yes|no), `<distances><sibling id value/>`.
Distances are completed like libvirt: the local distance is 10, a sibling given one way
is mirrored the other way unless given there too. Written sorted by id, memory in KiB.
HMAT children (`<cache>` in a cell, `<interconnects>`) are refused by name: QEMU's HMAT
needs `-machine hmat=on` and initiator data tapvirt does not build.
The guest's `<memory>` becomes the sum of the cells (libvirt does the same).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

from tapvirt.conf import errors as E
from tapvirt.conf.domain.memorybacking import MemAccess
from tapvirt.conf.rules import MAX_MEMORY_KIB, UINT_RE, UNIT_BYTES
from tapvirt.conf.xml import clip
from tapvirt.conf.xmlout import IND, Writer

if TYPE_CHECKING:
    from lxml import etree

    from tapvirt.conf.xml import Reader

__all__ = ["Numa", "NumaCell", "format_numa", "parse_numa"]

LOCAL_DISTANCE = 10
REMOTE_DISTANCE = 20
_BITMAP = re.compile(r"\^?[0-9]{1,5}(?:-[0-9]{1,5})?(?:,\^?[0-9]{1,5}(?:-[0-9]{1,5})?)*\Z")


@dataclass(frozen=True)
class NumaCell:
    id: int
    memory_kib: int
    cpus: tuple[int, ...] = ()
    mem_access: MemAccess | None = None
    discard: bool | None = None
    distances: tuple[int, ...] = ()  # value per sibling id, 0 = not given; () = none

    @property
    def cpus_text(self) -> str:
        return format_bitmap(self.cpus)

    @property
    def cpu_ranges(self) -> list[str]:
        """The cpus as QEMU's repeated cpus= values: one per contiguous range."""
        return format_bitmap(self.cpus).split(",") if self.cpus else []


@dataclass(frozen=True)
class Numa:
    cells: tuple[NumaCell, ...]

    @property
    def memory_kib(self) -> int:
        return sum(c.memory_kib for c in self.cells)

    @property
    def has_distances(self) -> bool:
        return any(c.distances for c in self.cells)

    def distance(self, src: int, dst: int) -> int:
        d = self.cells[src].distances
        if dst < len(d) and d[dst]:
            return d[dst]
        return LOCAL_DISTANCE if src == dst else REMOTE_DISTANCE


def parse_bitmap(r: Reader, el: etree._Element, attr: str, raw: str,
                 limit: int = 4096) -> tuple[int, ...]:
    if not _BITMAP.match(raw) or len(raw) > 1024:
        raise r.fail(E.INVALID_VALUE, el, f"Invalid value of '{attr}': '{clip(raw)}'",
                     "list CPUs like '0-3,6' (a '^' excludes: '0-7,^3')", attr=attr)
    out: set[int] = set()
    for part in raw.split(","):
        neg = part.startswith("^")
        lo_s, _, hi_s = part.lstrip("^").partition("-")
        lo, hi = int(lo_s), int(hi_s or lo_s)
        if hi < lo or hi >= limit:
            raise r.fail(E.INVALID_VALUE, el, f"Invalid value of '{attr}': '{clip(raw)}'",
                         f"write ascending ranges of numbers below {limit}", attr=attr)
        if neg:
            out.difference_update(range(lo, hi + 1))
        else:
            out.update(range(lo, hi + 1))
    return tuple(sorted(out))


def format_bitmap(bits: tuple[int, ...]) -> str:
    parts: list[str] = []
    i = 0
    while i < len(bits):
        j = i
        while j + 1 < len(bits) and bits[j + 1] == bits[j] + 1:
            j += 1
        parts.append(str(bits[i]) if i == j else f"{bits[i]}-{bits[j]}")
        i = j + 1
    return ",".join(parts)


def _kib(r: Reader, el: etree._Element) -> int:
    unit = el.get("unit", "KiB")
    mult = UNIT_BYTES.get(unit.lower())
    if mult is None:
        raise r.fail(E.INVALID_MEMORY, el, f"unknown unit '{clip(unit)}' in <cell>",
                     "use one of b, KiB, MiB, GiB, TiB, k, M, G, T, KB, MB, GB, TB",
                     attr="unit")
    raw = el.get("memory", "")
    if not UINT_RE.match(raw) or len(raw) > 30:
        raise r.fail(E.INVALID_MEMORY, el, f"malformed size {clip(raw)!r} in <cell memory>",
                     "write a whole number, e.g. memory='512' unit='MiB'", attr="memory")
    kib = -(-int(raw) * mult // 1024)
    if kib == 0 or kib > MAX_MEMORY_KIB:
        raise r.fail(E.INVALID_MEMORY, el, "NUMA cell memory must be larger than zero and "
                     "realistic", "write a size, e.g. memory='512' unit='MiB'", attr="memory")
    return kib


def parse_numa(r: Reader, el: etree._Element) -> Numa:
    found = r.shape(el, (), ("cell", "interconnects"), multi=("cell",))
    if (ic := r.one(found, "interconnects")) is not None:
        raise r.fail(E.UNSUPPORTED_ELEMENT, ic,
                     "NUMA <interconnects> (HMAT latencies/bandwidths) are not supported by "
                     "tapvirt", "remove <interconnects>")
    cell_els = found.get("cell", [])
    if not cell_els:
        raise r.fail(E.MISSING_ELEMENT, el, "NUMA topology defined without NUMA cells",
                     "add <cell cpus='0-1' memory='1' unit='GiB'/> per guest node, or "
                     "remove <numa>")
    n = len(cell_els)
    slots: list[NumaCell | None] = [None] * n
    raw_dist: list[list[int]] = [[] for _ in range(n)]
    sibling_lists: list[tuple[int, list[etree._Element]]] = []
    for i, c in enumerate(cell_els):
        cf = r.shape(c, ("id", "cpus", "memory", "unit", "memAccess", "discard"),
                     ("distances", "cache"), required_attrs=("memory",))
        if (cache := r.one(cf, "cache")) is not None:
            raise r.fail(E.UNSUPPORTED_ELEMENT, cache,
                         "NUMA cell <cache> (HMAT) is not supported by tapvirt",
                         "remove <cache> from the <cell>")
        cid = i
        if c.get("id") is not None:
            cid = r.uint(c, "id", 0, 2**31 - 1)
            if cid >= n or slots[cid] is not None:
                raise r.fail(
                    E.INVALID_VALUE, c,
                    "Exactly one 'cell' element per guest NUMA cell allowed, non-contiguous "
                    "ranges or ranges not in order are not allowed",
                    f"number the {n} cells 0..{n - 1}, each once", attr="id")
        cpus: tuple[int, ...] = ()
        if (raw := c.get("cpus")) is not None:
            cpus = parse_bitmap(r, c, "cpus", raw)
        kib = _kib(r, c)
        access = r.enum(c, "memAccess", MemAccess) if c.get("memAccess") else None
        discard = None
        if (dr := c.get("discard")) is not None:
            if dr not in ("yes", "no"):
                raise r.fail(E.INVALID_VALUE, c, f"Invalid value for attribute 'discard' in "
                             f"element 'cell': '{clip(dr)}'.", "use yes or no", attr="discard")
            discard = dr == "yes"
        slots[cid] = NumaCell(id=cid, memory_kib=kib, cpus=cpus, mem_access=access,
                              discard=discard)
        if (d := r.one(cf, "distances")) is not None:
            df = r.shape(d, (), ("sibling",), multi=("sibling",))
            if not df.get("sibling"):  # libvirt's schema: one or more
                raise r.fail(E.MISSING_ELEMENT, d, f"<distances> of NUMA cell {cid} has no "
                             "<sibling>", "add <sibling id='N' value='20'/> for the other "
                             "cells, or remove the empty <distances>")
            sibling_lists.append((cid, df.get("sibling", [])))
            raw_dist[cid] = [0] * n
        else:
            sibling_lists.append((cid, []))
    # distances, in document order, the way libvirt fills its matrix
    for cid, sibs in sibling_lists:
        for s in sibs:
            r.shape(s, ("id", "value"), required_attrs=("id", "value"))
            sid = r.uint(s, "id", 0, 2**31 - 1)
            if sid >= n:
                raise r.fail(E.INVALID_VALUE, s,
                             f"'sibling_id {sid}' does not refer to a valid cell within NUMA "
                             f"'cell id {cid}'",
                             f"use a cell id below {n}", attr="id")
            val = r.uint(s, "value", 0, 255)
            if sid == cid and val != LOCAL_DISTANCE:
                raise r.fail(E.INVALID_VALUE, s,
                             f"'value {val}' is invalid for 'sibling id {sid}' which is the local "
                             f"distance (must be {LOCAL_DISTANCE})",
                             "write value='10' for the cell itself", attr="value")
            if sid != cid and val <= LOCAL_DISTANCE:
                raise r.fail(E.INVALID_VALUE, s,
                             f"'value {val}' is invalid for 'sibling id {sid}' (must be above "
                             f"{LOCAL_DISTANCE})",
                             "write a remote distance from 11 to 255, e.g. 20", attr="value")
            for a_ in (cid, sid):
                if not raw_dist[a_]:
                    raw_dist[a_] = [0] * n
                    raw_dist[a_][a_] = LOCAL_DISTANCE
            raw_dist[cid][cid] = LOCAL_DISTANCE
            raw_dist[cid][sid] = val
            if not raw_dist[sid][cid]:
                raw_dist[sid][cid] = val
    cells = []
    seen_cpu: dict[int, int] = {}
    for cell in slots:
        assert cell is not None
        for cpu in cell.cpus:
            if cpu in seen_cpu:
                raise r.fail(E.INVALID_VALUE, cell_els[0],
                             f"NUMA cells {seen_cpu[cpu]} and {cell.id} have overlapping "
                             "vCPU ids", "give each vCPU to one cell")
            seen_cpu[cpu] = cell.id
        dist = tuple(raw_dist[cell.id])
        cells.append(cell if not dist else NumaCell(
            id=cell.id, memory_kib=cell.memory_kib, cpus=cell.cpus,
            mem_access=cell.mem_access, discard=cell.discard, distances=dist))
    return Numa(cells=tuple(cells))


def check_numa(r: Reader, el: etree._Element, numa: Numa, vcpus: int) -> None:
    top = max((c for cell in numa.cells for c in cell.cpus), default=-1)
    if top >= vcpus:
        raise r.fail(E.INVALID_VALUE, el, "Number of CPUs in <numa> exceeds the <vcpu> count",
                     f"use vCPU ids below {vcpus} in the cells' cpus=, or raise <vcpu>")


def format_numa(numa: Numa, w: Writer, depth: int) -> None:
    ind = IND * depth
    w(f"{ind}<numa>")
    for c in numa.cells:
        attrs = f" id='{c.id}'"
        if c.cpus:
            attrs += f" cpus='{c.cpus_text}'"
        attrs += f" memory='{c.memory_kib}' unit='KiB'"
        if c.mem_access is not None:
            attrs += f" memAccess='{c.mem_access}'"
        if c.discard is not None:
            attrs += f" discard='{'yes' if c.discard else 'no'}'"
        sib = [(i, v) for i, v in enumerate(c.distances) if v]
        if not sib:
            w(f"{ind}{IND}<cell{attrs}/>")
            continue
        w(f"{ind}{IND}<cell{attrs}>")
        w(f"{ind}{IND * 2}<distances>")
        for i, v in sib:
            w(f"{ind}{IND * 3}<sibling id='{i}' value='{v}'/>")
        w(f"{ind}{IND * 2}</distances>")
        w(f"{ind}{IND}</cell>")
    w(f"{ind}</numa>")
