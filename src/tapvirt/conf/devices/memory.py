"""`<memory model='dimm|nvdimm|virtio-mem'>`: memory devices (libvirt 9.0's
virDomainMemoryDef).

A dimm is a pc-dimm on the guest's memory hotplug area, backed by a memory-backend
object of its own (`tapvirt.qemu.argv.memory`): `<target><size>` (required), `<node>`
(the guest NUMA cell), `<source><nodemask>` (host NUMA nodes to bind it to, as
`<numatune>`), `<address type='dimm' slot= base=>` (a slot is assigned after parsing
when absent, libvirt's qemuDomainAssignMemorySlots), and `access`/`discard` like a NUMA
cell's. A virtio-mem device is a virtio-mem-pci on a PCI slot (assigned at define time
like other virtio devices) whose memory the guest plugs in `<block>`s up to
`<requested>`: `<target><block>` (a power of two, at least 2 MiB, libvirt's rule with
the host's THP size) and `<requested>` (at most `<size>`, a multiple of the block).
An nvdimm is an NVDIMM on a dimm slot backed by a host file QEMU maps
(`<source><path>`, required; a regular file of the user's: QEMU creates it when absent
and sizes it, a block device such as /dev/pmem0 is root's), with `<alignsize>`,
`<pmem/>` (the file is real persistent memory: no preallocation), `<target><label><size>`
(at least 128 KiB, below the size) and `<readonly/>` (QEMU's unarmed); the machine gets
nvdimm=on. The domain-level rules (`<maxMemory>`, slots, cells) are in
`tapvirt.conf.domain.memhotplug`.

Refused by name, with the reason: `<source><pagesize>` of a huge page (hugetlbfs, as
`<memoryBacking><hugepages>`), and the models an unprivileged tapvirt does not run:
virtio-pmem (a host file as the guest's persistent memory on PCI, not built yet), sgx-epc
(the host's SGX enclave memory, /dev/sgx_vepc).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING

from tapvirt.conf import errors as E
from tapvirt.conf.addresses import Address, AddressType
from tapvirt.conf.domain.memorybacking import MemAccess
from tapvirt.conf.xmlout import a, t
from tapvirt.errors import define

if TYPE_CHECKING:
    from lxml import etree

    from tapvirt.conf.xml import Found, Reader

__all__ = ["MemoryDevice", "MemoryModel", "format_memory", "parse_memory"]

MEMORY_MODEL_UNSUPPORTED = define(
    "memory-model-unsupported",
    "a <memory> device model tapvirt does not run (virtio-pmem, sgx-epc)",
    layer="conf",
)
SYSTEM_PAGE_KIB = 4  # x86: a <pagesize> of the system's page size is no huge page (libvirt)


class MemoryModel(StrEnum):
    DIMM = "dimm"
    NVDIMM = "nvdimm"
    VIRTIO_MEM = "virtio-mem"


_REFUSED = {
    "virtio-pmem": "a virtio-pmem device maps a host file as the guest's persistent memory; "
                   "tapvirt does not build that yet",
    "sgx-epc": "SGX enclave memory needs the host's /dev/sgx_vepc and an SGX-capable CPU "
               "under KVM",
}


@dataclass(frozen=True)
class MemoryDevice:
    model: MemoryModel
    size_kib: int
    node: int | None = None  # <target><node>: the guest NUMA cell
    source_nodes: tuple[int, ...] = ()  # <source><nodemask>: host NUMA nodes (bind)
    # <source><pagesize>: only the system's page size (kept; as if absent, like libvirt)
    pagesize_kib: int | None = None
    access: MemAccess | None = None
    discard: bool | None = None
    slot: int | None = None  # <address type='dimm' slot=>: assigned after parsing
    base: int | None = None  # <address base=>: the guest physical address, QEMU's addr
    block_kib: int = 0  # virtio-mem: <target><block>
    requested_kib: int = 0  # virtio-mem: <target><requested>
    path: str | None = None  # nvdimm: <source><path>, the file QEMU maps
    align_kib: int | None = None  # nvdimm: <source><alignsize>
    pmem: bool = False  # nvdimm: <source><pmem/>
    label_kib: int | None = None  # nvdimm: <target><label><size>
    readonly: bool = False  # nvdimm: <target><readonly/>
    address: Address | None = None  # virtio-mem: its PCI slot, assigned after parsing
    alias: str | None = None

    @property
    def needs_node(self) -> bool:
        """libvirt wants <node> on a dimm or virtio-mem of a guest with NUMA cells."""
        return True

    @property
    def on_slot(self) -> bool:
        """On a dimm slot (pc-dimm, nvdimm), not on PCI (virtio-mem)."""
        return self.model is not MemoryModel.VIRTIO_MEM


def parse_memory(r: Reader, el: etree._Element) -> MemoryDevice:
    from tapvirt.conf.devices.common import parse_alias
    from tapvirt.conf.domain.memhotplug import parse_size
    from tapvirt.conf.domain.numa import parse_bitmap

    raw_model = el.get("model")
    if raw_model in _REFUSED:
        raise r.fail(
            MEMORY_MODEL_UNSUPPORTED, el, _REFUSED[raw_model],
            "use <memory model='dimm'> (a pc-dimm of ordinary RAM), model='virtio-mem', or "
            "model='nvdimm' with a <source><path> file, or remove the device",
            attr="model")
    found = r.shape(el, ("model", "access", "discard"),
                    ("source", "target", "alias", "address"), required_attrs=("model",))
    model = r.enum(el, "model", MemoryModel)
    access = r.enum(el, "access", MemAccess) if el.get("access") is not None else None
    discard = None
    if el.get("discard") is not None:
        discard = el.get("discard") == "yes"
        if el.get("discard") not in ("yes", "no"):
            raise r.fail(E.INVALID_VALUE, el, f"Invalid value for attribute 'discard' in "
                         f"element 'memory': '{el.get('discard', '')[:40]}'.",
                         "use discard='yes' or discard='no'", attr="discard")
    nv = model is MemoryModel.NVDIMM
    if nv:
        return _nvdimm(r, el, found, access, discard)
    nodes: tuple[int, ...] = ()
    pagesize = None
    if (src := r.one(found, "source")) is not None:
        sf = r.shape(src, (), ("nodemask", "pagesize"))
        if (nm := r.one(sf, "nodemask")) is not None:
            nodes = parse_bitmap(r, nm, "nodemask", r.text(nm, strip=True))
        ps = r.one(sf, "pagesize")
        pagesize = parse_size(r, ps) if ps is not None else None
        if ps is not None and pagesize != SYSTEM_PAGE_KIB:
            raise r.fail(
                E.UNSUPPORTED_VALUE, ps,
                "huge pages need a hugetlbfs mount and pages the administrator "
                "reserves; tapvirt does not set them up",
                "remove <pagesize> (the dimm then uses normal pages)")
    tgt = r.need(found, "target", el)
    vmem = model is MemoryModel.VIRTIO_MEM
    tf = r.shape(tgt, (), ("size", "node", *(("block", "requested") if vmem else ())))
    size = parse_size(r, r.need(tf, "size", tgt))
    node = None
    if (n := r.one(tf, "node")) is not None:
        r.shape(n, text=True)
        node = r.uint(n, None, 0, 2**31 - 1)
    if vmem:
        return _virtio_mem(r, el, found, tf, MemoryDevice(
            model=model, size_kib=size, node=node, source_nodes=nodes,
            pagesize_kib=pagesize, access=access, discard=discard,
            alias=parse_alias(r, r.one(found, "alias"), "virtiomem0")))
    slot, base = _dimm_address(r, r.one(found, "address"))
    alias = parse_alias(r, r.one(found, "alias"), "dimm0")
    return MemoryDevice(model=model, size_kib=size, node=node, source_nodes=nodes,
                        pagesize_kib=pagesize, access=access, discard=discard, slot=slot,
                        base=base, alias=alias)


def _dimm_address(r: Reader, ad: etree._Element | None) -> tuple[int | None, int | None]:
    """`<address type='dimm' slot= base=>`: (slot, base)."""
    slot = base = None
    if ad is not None:
        if ad.get("type") != "dimm":
            raise r.fail(
                E.INVALID_VALUE, ad, "only 'dimm' addresses are supported for the pc-dimm "
                "device", "write <address type='dimm' slot='N'/> or leave <address> out",
                attr="type")
        r.shape(ad, ("type", "slot", "base"), required_attrs=("type",))
        if ad.get("slot") is not None:
            slot = r.uint(ad, "slot", 0, 2**32 - 1)
        if (rb := ad.get("base")) is not None:
            base = _hex(r, ad, rb)
    return slot, base


NVDIMM_MIN_LABEL_KIB = 128


def _nvdimm(r: Reader, el: etree._Element, found: Found, access: MemAccess | None,
            discard: bool | None) -> MemoryDevice:
    """libvirt's nvdimm parse and validation (virDomainMemorySourceDefParseXML,
    virDomainMemoryTargetDefParseXML, virDomainMemoryDefValidate), with its messages."""
    from tapvirt.conf.devices.common import parse_alias
    from tapvirt.conf.domain.memhotplug import parse_size

    if discard:
        raise r.fail(E.UNSUPPORTED_VALUE, el, "discard is not supported for nvdimms",
                     "remove discard='yes'", attr="discard")
    src = r.one(found, "source")
    sf = r.shape(src, (), ("path", "alignsize", "pmem")) if src is not None else {}
    path_el = r.one(sf, "path")
    if path_el is None:
        raise r.fail(E.MISSING_ELEMENT, src if src is not None else el,
                     "path is required for model 'nvdimm'",
                     "add <source><path>/home/USER/guest.nvdimm</path></source> (a file of "
                     "yours; QEMU creates it when it does not exist)")
    path = r.abspath(path_el, None, r.text(path_el))
    al = r.one(sf, "alignsize")
    align = parse_size(r, al) if al is not None else None
    pmem = False
    if (pm := r.one(sf, "pmem")) is not None:
        r.shape(pm)
        pmem = True
    tgt = r.need(found, "target", el)
    tf = r.shape(tgt, (), ("size", "node", "label", "readonly"))
    size = parse_size(r, r.need(tf, "size", tgt))
    node = None
    if (n := r.one(tf, "node")) is not None:
        r.shape(n, text=True)
        node = r.uint(n, None, 0, 2**31 - 1)
    label = None
    if (lb := r.one(tf, "label")) is not None:
        ls = r.need(r.shape(lb, (), ("size",)), "size", lb)
        label = parse_size(r, ls)
        if label < NVDIMM_MIN_LABEL_KIB:
            raise r.fail(E.INVALID_MEMORY, ls, "nvdimm label must be at least 128KiB",
                         "write <label><size unit='KiB'>128</size></label> or more")
        if label >= size:
            raise r.fail(E.INVALID_MEMORY, ls, "label size must be smaller than NVDIMM size",
                         f"make the label smaller than {size} KiB")
    readonly = False
    if (ro := r.one(tf, "readonly")) is not None:
        r.shape(ro)
        readonly = True
    slot, base = _dimm_address(r, r.one(found, "address"))
    return MemoryDevice(
        model=MemoryModel.NVDIMM, size_kib=size, node=node, access=access, discard=discard,
        slot=slot, base=base, path=path, align_kib=align, pmem=pmem, label_kib=label,
        readonly=readonly, alias=parse_alias(r, r.one(found, "alias"), "nvdimm0"))


VIRTIO_MEM_MIN_BLOCK_KIB = 2048  # the host's THP size on x86 (libvirt's fallback too)


def _virtio_mem(r: Reader, el: etree._Element, found: Found, tf: Found,
                dev: MemoryDevice) -> MemoryDevice:
    """libvirt's virDomainMemoryDefValidate for virtio-mem, with its messages."""
    from dataclasses import replace

    from tapvirt.conf.devices.common import parse_device_address
    from tapvirt.conf.domain.memhotplug import parse_size

    block = parse_size(r, b) if (b := r.one(tf, "block")) is not None else 0
    req_el = r.one(tf, "requested")
    requested = parse_size(r, req_el, zero=True) if req_el is not None else 0
    where = b if b is not None else el
    if requested > dev.size_kib:
        raise r.fail(E.INVALID_MEMORY, req_el if req_el is not None else el,
                     f"requested size must be smaller than or equal to @size "
                     f"({dev.size_kib}KiB)", f"make <requested> at most {dev.size_kib} KiB")
    if block <= 0 or block & (block - 1):
        raise r.fail(E.INVALID_MEMORY, where, "block size must be a power of two",
                     "write <block unit='KiB'>2048</block> (or 4096, 8192, ...) in <target>")
    if block < VIRTIO_MEM_MIN_BLOCK_KIB:
        raise r.fail(E.INVALID_MEMORY, where, f"block size too small, must be at least "
                     f"{VIRTIO_MEM_MIN_BLOCK_KIB}KiB",
                     f"write <block unit='KiB'>{VIRTIO_MEM_MIN_BLOCK_KIB}</block>")
    if requested % block:
        raise r.fail(E.INVALID_MEMORY, req_el if req_el is not None else el,
                     "requested size must be an integer multiple of block size",
                     f"make <requested> a multiple of {block} KiB")
    if dev.size_kib % block:
        # tapvirt: QEMU refuses it ("'size' property must be multiples of 'block-size'")
        raise r.fail(E.INVALID_MEMORY, r.need(tf, "size", el),
                     f"the size ({dev.size_kib} KiB) must be a multiple of the block size "
                     f"({block} KiB): QEMU would refuse to start",
                     f"make <size> a multiple of {block} KiB")
    addr = parse_device_address(r, r.one(found, "address"), (AddressType.PCI,),
                                "a virtio-mem device")
    return replace(dev, block_kib=block, requested_kib=requested, address=addr)


def _hex(r: Reader, el: etree._Element, raw: str) -> int:
    try:
        value = int(raw, 16) if raw[:2].lower() == "0x" else int(raw, 10)
    except ValueError:
        value = -1
    if not 0 <= value < 2**64 or len(raw) > 20:
        raise r.fail(E.INVALID_VALUE, el, f"Invalid value for attribute 'base' in element "
                     f"'address': '{raw[:40]}'.", "write a guest physical address, e.g. "
                     "base='0x100000000' (4 GiB), or leave base= out", attr="base")
    return value


def format_memory(m: MemoryDevice, ind: str, live: bool) -> list[str]:
    """libvirt's virDomainMemoryDefFormat: source (nodemask, pagesize), target (size,
    node; block, requested), alias, address."""
    from tapvirt.conf.devices.common import address_lines
    from tapvirt.conf.domain.numa import format_bitmap

    i2, i3 = ind + "  ", ind + "    "
    head = f"{ind}<memory model={a(m.model)}"
    if m.access is not None:
        head += f" access={a(m.access)}"
    if m.discard is not None:
        head += f" discard='{'yes' if m.discard else 'no'}'"
    out = [head + ">"]
    source = []
    if m.path is not None:
        source.append(f"{i3}<path>{t(m.path)}</path>")
    if m.align_kib is not None:
        source.append(f"{i3}<alignsize unit='KiB'>{m.align_kib}</alignsize>")
    if m.pmem:
        source.append(f"{i3}<pmem/>")
    if m.source_nodes:
        source.append(f"{i3}<nodemask>{format_bitmap(m.source_nodes)}</nodemask>")
    if m.pagesize_kib is not None:
        source.append(f"{i3}<pagesize unit='KiB'>{m.pagesize_kib}</pagesize>")
    if source:
        out += [f"{i2}<source>", *source, f"{i2}</source>"]
    out += [f"{i2}<target>", f"{i3}<size unit='KiB'>{m.size_kib}</size>"]
    if m.node is not None:
        out.append(f"{i3}<node>{m.node}</node>")
    if m.label_kib is not None:
        out += [f"{i3}<label>", f"{i3}  <size unit='KiB'>{m.label_kib}</size>", f"{i3}</label>"]
    if m.readonly:
        out.append(f"{i3}<readonly/>")
    if m.model is MemoryModel.VIRTIO_MEM:
        out += [f"{i3}<block unit='KiB'>{m.block_kib}</block>",
                f"{i3}<requested unit='KiB'>{m.requested_kib}</requested>"]
    out.append(f"{i2}</target>")
    if m.alias is not None and (live or m.alias.startswith("ua-")):
        out.append(f"{i2}<alias name={a(m.alias)}/>")
    out += address_lines(m.address, ind)
    if m.slot is not None:
        addr = f"{i2}<address type='dimm' slot='{m.slot}'"
        if m.base:
            addr += f" base='0x{m.base:x}'"
        out.append(addr + "/>")
    out.append(f"{ind}</memory>")
    return out
