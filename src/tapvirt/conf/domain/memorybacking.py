"""`<memoryBacking>`: how guest RAM is backed (libvirt 9.0 with QEMU 7.2: a
memory-backend object named pc.ram). Supported: `<source type='anonymous|memfd'/>`,
`<access mode='shared|private'/>`, `<allocation mode='immediate|ondemand'/>`,
`<discard/>`, `<nosharepages/>`. Refused by name, with a fix: hugepages (they need a
hugetlbfs mount and pages the administrator reserves), `<locked/>` (an unprivileged QEMU
cannot lock all guest memory beyond RLIMIT_MEMLOCK), `<source type='file'/>` (libvirt's
memory_backing_dir is not writable by the user: use memfd)."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING

from tapvirt.conf import decl
from tapvirt.conf import errors as E
from tapvirt.conf.xmlout import Writer

if TYPE_CHECKING:
    from lxml import etree

    from tapvirt.conf.xml import Reader


class MemSource(StrEnum):
    ANONYMOUS = "anonymous"
    MEMFD = "memfd"


class MemAccess(StrEnum):
    SHARED = "shared"
    PRIVATE = "private"


class MemAllocation(StrEnum):
    IMMEDIATE = "immediate"
    ONDEMAND = "ondemand"


@dataclass(frozen=True)
class MemoryBacking:
    nosharepages: bool = decl.flag("nosharepages")
    source: MemSource | None = decl.enum("source/@type", MemSource, required=True)
    access: MemAccess | None = decl.enum("access/@mode", MemAccess, required=True)
    allocation: MemAllocation | None = decl.enum("allocation/@mode", MemAllocation,
                                                 required=True)
    discard: bool = decl.flag("discard")

    @property
    def needs_backend(self) -> bool:
        """Whether QEMU needs an explicit memory-backend object (libvirt's rule)."""
        return (self.source is not None or self.access is not None
                or self.allocation is MemAllocation.IMMEDIATE)


_REFUSED = {
    "hugepages": ("hugepages need a hugetlbfs mount and pages the administrator reserves; "
                  "tapvirt does not set them up",
                  "remove <hugepages/> (the guest then uses normal pages)"),
    "locked": ("an unprivileged QEMU cannot lock all guest memory (RLIMIT_MEMLOCK)",
               "remove <locked/>"),
}


def parse_memory_backing(r: Reader, el: etree._Element) -> MemoryBacking:
    for child in el:
        if child.tag in _REFUSED:
            cause, fix = _REFUSED[str(child.tag)]
            raise r.fail(E.UNSUPPORTED_VALUE, child, cause, fix)
    src = el.find("source")
    if src is not None and src.get("type") == "file":
        raise r.fail(
            E.UNSUPPORTED_VALUE, src,
            "file-backed memory lives in libvirt's memory_backing_dir, which an unprivileged "
            "user cannot write", "use <source type='memfd'/> (shared memory without a file)",
            attr="type",
        )
    return decl.read(r, el, MemoryBacking)


def format_memory_backing(mb: MemoryBacking, w: Writer) -> None:
    decl.write(mb, "memoryBacking", w, 1)
