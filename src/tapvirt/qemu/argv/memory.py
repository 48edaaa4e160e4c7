"""Guest RAM: `-m` and, when `<memoryBacking>` asks for more than QEMU's default, the
memory-backend object `pc.ram` that -machine points at (libvirt 9.0 with QEMU 7.2);
`<nosharepages/>` is `-machine mem-merge=off`. Guest NUMA cells (`<cpu><numa>`): one
backend per cell instead of pc.ram, after -smp (`numa_args`)."""

from __future__ import annotations

from typing import Any

from tapvirt.conf.domain.memorybacking import MemAccess, MemAllocation, MemSource
from tapvirt.conf.domain.numa import Numa
from tapvirt.conf.model import Domain
from tapvirt.qemu.argv.encode import jsonarg


def _numa(dom: Domain) -> Numa | None:
    return dom.cpu.numa if dom.cpu is not None else None


def _align_kib(kib: int) -> int:
    """libvirt's qemuDomainAlignMemorySizes: each NUMA cell rounded up to 1 MiB on x86."""
    return -(-kib // 1024) * 1024


def _pc_ram(dom: Domain) -> bool:
    mb = dom.memory_backing
    return (mb is not None and mb.needs_backend) or (
        dom.numatune is not None and dom.numatune.binding(None) is not None)


def _bind(obj: dict[str, Any], dom: Domain, cellid: int | None) -> None:
    """QEMU's host-nodes + policy from <numatune> (after size, libvirt's order)."""
    b = dom.numatune.binding(cellid) if dom.numatune is not None else None
    if b is not None:
        obj["host-nodes"] = list(b[1])
        obj["policy"] = b[0].qemu_policy


def memory_machine_params(dom: Domain) -> str:
    mb = dom.memory_backing
    if mb is None and not _pc_ram(dom):
        return ""
    out = ",mem-merge=off" if mb is not None and mb.nosharepages else ""
    if _pc_ram(dom) and _numa(dom) is None:
        out += ",memory-backend=pc.ram"
    return out


def numa_args(dom: Domain) -> list[str]:
    """Per guest NUMA cell a memory-backend object `ram-nodeN` and `-numa node` (QEMU 7.2
    has no `mem=` for current machine types), then `-numa dist` for every pair when any
    cell has distances (libvirt's qemuBuildNumaCommandLine)."""
    numa = _numa(dom)
    if numa is None:
        return []
    mb = dom.memory_backing
    memfd = mb is not None and mb.source is MemSource.MEMFD
    argv: list[str] = []
    for c in numa.cells:
        obj: dict[str, Any] = {"qom-type": "memory-backend-memfd" if memfd
                               else "memory-backend-ram", "id": f"ram-node{c.id}"}
        access = c.mem_access or (mb.access if mb is not None else None)
        if access is not None:
            obj["share"] = access is MemAccess.SHARED
        if memfd:
            obj["x-use-canonical-path-for-ramblock-id"] = False
        if mb is not None and mb.allocation is MemAllocation.IMMEDIATE:
            obj["prealloc"] = True
        obj["size"] = _align_kib(c.memory_kib) * 1024
        _bind(obj, dom, c.id)
        node = f"node,nodeid={c.id}"
        for rng in c.cpu_ranges:
            node += f",cpus={rng}"
        argv += ["-object", jsonarg(obj), "-numa", f"{node},memdev=ram-node{c.id}"]
    if numa.has_distances:
        n = len(numa.cells)
        for i in range(n):
            for j in range(n):
                argv += ["-numa", f"dist,src={i},dst={j},val={numa.distance(i, j)}"]
    return argv


def memory_args(dom: Domain) -> list[str]:
    numa = _numa(dom)
    if numa is not None:
        return ["-m", f"size={sum(_align_kib(c.memory_kib) for c in numa.cells)}k"]
    argv = ["-m", f"size={dom.memory_kib}k"]
    mb = dom.memory_backing
    if not _pc_ram(dom):
        return argv
    memfd = mb is not None and mb.source is MemSource.MEMFD
    obj: dict[str, Any] = {"qom-type": "memory-backend-memfd" if memfd
                           else "memory-backend-ram", "id": "pc.ram"}
    if mb is not None and mb.access is not None:
        obj["share"] = mb.access is MemAccess.SHARED
    if memfd:
        obj["x-use-canonical-path-for-ramblock-id"] = False
    if mb is not None and mb.allocation is MemAllocation.IMMEDIATE:
        obj["prealloc"] = True
    obj["size"] = dom.memory_kib * 1024
    _bind(obj, dom, None)
    return [*argv, "-object", jsonarg(obj)]


def iothread_args(dom: Domain) -> list[str]:
    argv: list[str] = []
    for n in range(1, (dom.iothreads or 0) + 1):
        argv += ["-object", jsonarg({"qom-type": "iothread", "id": f"iothread{n}"})]
    return argv
