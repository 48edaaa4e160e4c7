"""Guest RAM: `-m` and, when `<memoryBacking>` asks for more than QEMU's default, the
memory-backend object `pc.ram` that -machine points at (libvirt 9.0 with QEMU 7.2);
`<nosharepages/>` is `-machine mem-merge=off`. Guest NUMA cells (`<cpu><numa>`): one
backend per cell instead of pc.ram, after -smp (`numa_args`). `<maxMemory>` adds
`slots=,maxmem=` to -m; each `<memory model='dimm'>` is a backend `memdimmN` and a
`pc-dimm` device `dimmN` (N its slot), each virtio-mem a backend `memvirtiomemN` and a
`virtio-mem-pci` `virtiomemN`, each nvdimm a memory-backend-file on its file and an
`nvdimm` (with -machine nvdimm=on), after the controllers (`memory_device_args`)."""

from __future__ import annotations

from typing import Any

from tapvirt.conf.devices.memory import MemoryDevice, MemoryModel
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
    out = ",mem-merge=off" if mb is not None and mb.nosharepages else ""
    if _pc_ram(dom) and _numa(dom) is None:
        out += ",memory-backend=pc.ram"
    if any(m.model is MemoryModel.NVDIMM for m in dom.devices.memories):
        out += ",nvdimm=on"
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


def _hotplug_params(dom: Domain) -> str:
    mm = dom.max_memory
    return "" if mm is None else f",slots={mm.slots},maxmem={_align_kib(mm.kib)}k"


def memory_args(dom: Domain) -> list[str]:
    numa = _numa(dom)
    if numa is not None:
        size = sum(_align_kib(c.memory_kib) for c in numa.cells)
        return ["-m", f"size={size}k{_hotplug_params(dom)}"]
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


MODULE_ALIGN_KIB = 2048  # qemuDomainGetMemoryModuleSizeAlignment: 2 MiB on x86


_DEVICE = {MemoryModel.DIMM: "pc-dimm", MemoryModel.NVDIMM: "nvdimm",
           MemoryModel.VIRTIO_MEM: "virtio-mem-pci"}


def _device_backend(dom: Domain, m: MemoryDevice, memdev: str) -> dict[str, Any]:
    """libvirt's qemuBuildMemoryBackendProps for a memory device."""
    mb = dom.memory_backing
    numa = _numa(dom)
    if m.path is not None:
        obj: dict[str, Any] = {"qom-type": "memory-backend-file", "id": memdev,
                               "mem-path": m.path}
    else:
        memfd = mb is not None and mb.source is MemSource.MEMFD
        obj = {"qom-type": "memory-backend-memfd" if memfd else "memory-backend-ram",
               "id": memdev}
    access = m.access
    if access is None and numa is not None and m.node is not None:
        access = numa.cells[m.node].mem_access
    if access is None and mb is not None:
        access = mb.access
    if access is not None:
        obj["share"] = access is MemAccess.SHARED
    immediate = mb is not None and mb.allocation is MemAllocation.IMMEDIATE
    if m.model is MemoryModel.VIRTIO_MEM:
        obj["reserve"] = False  # its prealloc is the device's
    elif immediate or (m.path is not None and not m.pmem):
        obj["prealloc"] = True  # a file that is not real pmem is preallocated
    obj["size"] = -(-m.size_kib // MODULE_ALIGN_KIB) * MODULE_ALIGN_KIB * 1024
    if m.align_kib:
        obj["align"] = m.align_kib * 1024
    if m.pmem:
        obj["pmem"] = True
    if m.source_nodes:
        b = dom.numatune.binding(m.node) if dom.numatune is not None else None
        obj["host-nodes"] = list(m.source_nodes)
        obj["policy"] = b[0].qemu_policy if b is not None else "bind"
    else:
        _bind(obj, dom, m.node)
    return obj


def memory_device_args(dom: Domain) -> list[str]:
    """libvirt's qemuBuildMemoryDeviceCommandLine: each memory device's objects and its
    device (`memory_device_objects`), in the definition's order."""
    argv: list[str] = []
    for m in dom.devices.memories:
        objects, dev = memory_device_objects(dom, m)
        for obj in objects:
            argv += ["-object", jsonarg(obj)]
        argv += ["-device", jsonarg(dev)]
    return argv


def memory_device_objects(dom: Domain, m: MemoryDevice) -> tuple[list[dict[str, Any]],
                                                                dict[str, Any]]:
    """The -object's (a thread-context, then the backend) and the -device of one memory
    device; hotplug adds the same with object-add and device_add. The backend is a NUMA
    cell's (memfd with <memoryBacking><source type='memfd'>, `share` from the device's
    access, its cell's or <memoryBacking>'s; host-nodes from <source><nodemask> or
    <numatune>; an nvdimm's the file). A dimm's or nvdimm's backend preallocates with
    allocation immediate (an nvdimm's unless its file is real pmem; then a
    thread-context on the host nodes), its device has a slot and base address; a
    virtio-mem backend has reserve=false and its virtio-mem-pci the block and requested
    sizes, prealloc and a PCI address."""
    from tapvirt.qemu.argv.controller import address_props

    mb = dom.memory_backing
    immediate = mb is not None and mb.allocation is MemAllocation.IMMEDIATE
    alias = m.alias or f"{m.model}{m.slot}"
    memdev = f"mem{alias}"
    obj = _device_backend(dom, m, memdev)
    objects = [obj]
    if obj.get("prealloc") and "host-nodes" in obj:
        objects.insert(0, {"qom-type": "thread-context", "id": f"tc-{memdev}",
                           "node-affinity": obj["host-nodes"]})
        obj["prealloc-context"] = f"tc-{memdev}"
    dev: dict[str, Any] = {"driver": _DEVICE[m.model]}
    if m.node is not None:
        dev["node"] = m.node
    if m.label_kib:
        dev["label-size"] = m.label_kib * 1024
    if m.model is MemoryModel.VIRTIO_MEM:
        dev["block-size"] = m.block_kib * 1024
        if m.requested_kib:
            dev["requested-size"] = m.requested_kib * 1024
    if m.readonly:
        dev["unarmed"] = True
    dev["memdev"] = memdev
    if m.model is MemoryModel.VIRTIO_MEM and immediate:
        dev["prealloc"] = True
    dev["id"] = alias
    if m.on_slot:
        dev["slot"] = m.slot
        if m.base:
            dev["addr"] = m.base
    else:
        dev.update(address_props(dom, m.address))
    return objects, dev


def iothread_args(dom: Domain) -> list[str]:
    argv: list[str] = []
    for n in range(1, (dom.iothreads or 0) + 1):
        argv += ["-object", jsonarg({"qom-type": "iothread", "id": f"iothread{n}"})]
    return argv
