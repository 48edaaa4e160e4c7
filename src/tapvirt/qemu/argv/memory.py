"""Guest RAM: `-m` and, when `<memoryBacking>` asks for more than QEMU's default, the
memory-backend object `pc.ram` that -machine points at (libvirt 9.0 with QEMU 7.2);
`<nosharepages/>` is `-machine mem-merge=off`."""

from __future__ import annotations

from typing import Any

from tapvirt.conf.domain.memorybacking import MemAccess, MemAllocation, MemSource
from tapvirt.conf.model import Domain
from tapvirt.qemu.argv.encode import jsonarg


def memory_machine_params(dom: Domain) -> str:
    mb = dom.memory_backing
    if mb is None:
        return ""
    out = ",mem-merge=off" if mb.nosharepages else ""
    if mb.needs_backend:
        out += ",memory-backend=pc.ram"
    return out


def memory_args(dom: Domain) -> list[str]:
    argv = ["-m", f"size={dom.memory_kib}k"]
    mb = dom.memory_backing
    if mb is None or not mb.needs_backend:
        return argv
    memfd = mb.source is MemSource.MEMFD
    obj: dict[str, Any] = {"qom-type": "memory-backend-memfd" if memfd
                           else "memory-backend-ram", "id": "pc.ram"}
    if mb.access is not None:
        obj["share"] = mb.access is MemAccess.SHARED
    if memfd:
        obj["x-use-canonical-path-for-ramblock-id"] = False
    if mb.allocation is MemAllocation.IMMEDIATE:
        obj["prealloc"] = True
    obj["size"] = dom.memory_kib * 1024
    return [*argv, "-object", jsonarg(obj)]


def iothread_args(dom: Domain) -> list[str]:
    argv: list[str] = []
    for n in range(1, (dom.iothreads or 0) + 1):
        argv += ["-object", jsonarg({"qom-type": "iothread", "id": f"iothread{n}"})]
    return argv
