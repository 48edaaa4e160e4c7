"""`<idmap>` (user-namespace id maps) and `<domain id=...>`: what libvirt's QEMU driver
keeps or drops without effect.

idmap: libvirt parses and keeps it for every driver, but only LXC uses it; for QEMU it
has no effect. tapvirt keeps it (written after `<os>`, libvirt's order) with a
`warning[no-effect]`. libvirt's rules: start/target/count on every entry, uid and gid
mapped both, and the container's root (start='0') mapped.

`<domain id='N'>`: the id of a running domain; libvirt ignores it when a definition is
parsed for define/domxml-to-native (domain "-1"). tapvirt does the same: accepted,
not kept, reported by `define`/`validate` as a warning (the model keeps the number only
for that warning).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from tapvirt.conf import errors as E
from tapvirt.conf.xmlout import IND, Writer

if TYPE_CHECKING:
    from lxml import etree

    from tapvirt.conf.xml import Reader

__all__ = ["IdMap", "IdRange", "format_idmap", "parse_idmap"]


@dataclass(frozen=True)
class IdRange:
    start: int
    target: int
    count: int


@dataclass(frozen=True)
class IdMap:
    uids: tuple[IdRange, ...]
    gids: tuple[IdRange, ...]


def parse_idmap(r: Reader, el: etree._Element) -> IdMap:
    found = r.shape(el, (), ("uid", "gid"), multi=("uid", "gid"))
    maps: dict[str, tuple[IdRange, ...]] = {}
    for tag in ("uid", "gid"):
        out = []
        for e in found.get(tag, []):
            r.shape(e, ("start", "target", "count"),
                    required_attrs=("start", "target", "count"))
            out.append(IdRange(r.uint(e, "start", 0, 2**32 - 1),
                               r.uint(e, "target", 0, 2**32 - 1),
                               r.uint(e, "count", 1, 2**32 - 1)))
        maps[tag] = tuple(sorted(out, key=lambda x: x.start))
    if bool(maps["uid"]) != bool(maps["gid"]):
        raise r.fail(E.MISSING_ELEMENT, el, "uid and gid should be mapped both",
                     "add both <uid start target count/> and <gid .../>, or remove <idmap>")
    for tag in ("uid", "gid"):
        if maps[tag] and maps[tag][0].start != 0:
            raise r.fail(E.INVALID_VALUE, el, "You must map the root user of container",
                         f"add <{tag} start='0' target='...' count='...'/>")
    return IdMap(maps["uid"], maps["gid"])


def format_idmap(m: IdMap, w: Writer) -> None:
    w(f"{IND}<idmap>")
    for tag, ranges in (("uid", m.uids), ("gid", m.gids)):
        for x in ranges:
            w(f"{IND * 2}<{tag} start='{x.start}' target='{x.target}' count='{x.count}'/>")
    w(f"{IND}</idmap>")
