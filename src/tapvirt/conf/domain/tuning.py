"""`<iothreads>`, `<cputune>`, `<numatune>`: the basics.

iothreads: a count, each one a QEMU iothread object (iothread1..N). cputune: accepted and
kept, but shares/period/quota/vcpupin need cgroups or pinning an unprivileged tapvirt does
not do: a warning says so (`tapvirt.conf.warnings`). numatune memory binding (a nodeset
with mode strict/interleave/preferred/restrictive) is refused by name: tapvirt does not
bind guest memory to host NUMA nodes."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

from tapvirt.conf import decl
from tapvirt.conf import errors as E
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


def parse_numatune(r: Reader, el: etree._Element) -> None:
    """Never returns: every numatune binds memory (refused by name)."""
    raise r.fail(
        E.UNSUPPORTED_VALUE, el,
        "<numatune> binds guest memory to host NUMA nodes; tapvirt does not bind memory "
        "(libvirt uses cgroups' cpuset.mems or QEMU's host-nodes policy)",
        "remove <numatune>; start tapvirt under `numactl --membind=NODES` to bind the "
        "whole QEMU process",
    )
