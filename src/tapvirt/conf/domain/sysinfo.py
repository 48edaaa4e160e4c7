"""`<sysinfo type='smbios'>`: the SMBIOS tables the guest sees (with `<os><smbios
mode='sysinfo'/>`), as KubeVirt and virt-install write them. libvirt 9.0's rules: the names
each block allows, one baseBoard for QEMU, the system uuid equal to the domain's."""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING

from tapvirt.conf import decl
from tapvirt.conf import errors as E
from tapvirt.conf.xmlout import Writer

if TYPE_CHECKING:
    from lxml import etree

    from tapvirt.conf.xml import Reader


class SysinfoType(StrEnum):
    SMBIOS = "smbios"


@dataclass(frozen=True)
class Entry:
    name: str | None = decl.string("@name")
    value: str | None = decl.text("text()")


@dataclass(frozen=True)
class Block:
    entries: tuple[Entry, ...] = decl.elements("entry", Entry)

    def get(self, name: str) -> str | None:
        return next((e.value for e in self.entries if e.name == name), None)


@dataclass(frozen=True)
class Sysinfo:
    type: SysinfoType = decl.enum("@type", SysinfoType, required=True)
    bios: Block | None = decl.element("bios", Block)
    system: Block | None = decl.element("system", Block)
    base_boards: tuple[Block, ...] = decl.elements("baseBoard", Block)
    chassis: Block | None = decl.element("chassis", Block)
    oem_strings: Block | None = decl.element("oemStrings", Block)


# the entry names of each block, in the order QEMU's -smbios takes them
NAMES = {
    "bios": ("vendor", "version", "date", "release"),
    "system": ("manufacturer", "product", "version", "serial", "uuid", "sku", "family"),
    "baseBoard": ("manufacturer", "product", "version", "serial", "asset", "location"),
    "chassis": ("manufacturer", "version", "serial", "asset", "sku"),
}
_DATE = re.compile(r"[0-9]{2}/[0-9]{2}/(?:[0-9]{2}|[0-9]{4})\Z")


def parse_sysinfo(r: Reader, el: etree._Element) -> Sysinfo:
    if el.get("type") == "fwcfg":
        raise r.fail(E.UNSUPPORTED_VALUE, el, "sysinfo type 'fwcfg' is not supported by "
                     "tapvirt", "use type='smbios'", attr="type")
    info = decl.read(r, el, Sysinfo)
    if len(info.base_boards) > 1:
        raise r.fail(E.UNSUPPORTED_VALUE, el.findall("baseBoard")[1],
                     "qemu does not support more than one entry to Type 2 in SMBIOS table",
                     "keep one <baseBoard>")
    for tag in ("bios", "system", "baseBoard", "chassis", "oemStrings"):
        for block_el in el.findall(tag):
            if block_el.find("entry") is None:
                raise r.fail(E.MISSING_ELEMENT, block_el,
                             f"<{tag}> needs at least one <entry> (libvirt's schema)",
                             f"add <entry> elements or remove the empty <{tag}>")
            seen: set[str] = set()
            for e_el in block_el.findall("entry"):
                name = e_el.get("name")
                if tag == "oemStrings":
                    if name is not None:
                        raise r.fail(E.UNSUPPORTED_ATTRIBUTE, e_el,
                                     "an <oemStrings> entry has no name", "remove name=",
                                     attr="name")
                    if not e_el.text:
                        raise r.fail(E.INVALID_VALUE, e_el, "an empty <oemStrings> entry",
                                     "write the string inside <entry>")
                    continue
                if name not in NAMES[tag]:
                    raise r.fail(
                        E.INVALID_VALUE, e_el,
                        f"unknown <{tag}> entry name '{(name or '')[:40]}'",
                        f"use one of: {', '.join(NAMES[tag])}", attr="name",
                    )
                if name in seen:
                    raise r.fail(E.DUPLICATE_ELEMENT, e_el,
                                 f"<{tag}> entry '{name}' is listed twice", "keep one")
                seen.add(name)
                if tag == "bios" and name == "date" and not _DATE.match(e_el.text or ""):
                    raise r.fail(E.INVALID_VALUE, e_el,
                                 f"Invalid BIOS 'date' format: {(e_el.text or '')[:40]}",
                                 "write mm/dd/yy or mm/dd/yyyy")
    return info


def check_sysinfo(r: Reader, el: etree._Element, info: Sysinfo, uuid: str) -> str:
    """The domain's uuid: the sysinfo system uuid when <uuid> was absent (libvirt's rule),
    else `uuid`, which the sysinfo one must equal."""
    import uuid as uuidlib

    given = info.system.get("uuid") if info.system is not None else None
    if given is None:
        return uuid
    try:
        canonical = str(uuidlib.UUID(hex=given))
    except ValueError:
        raise r.fail(E.INVALID_UUID, el, f"malformed uuid element: {given[:40]!r}",
                     "write 32 hex digits in <entry name='uuid'>") from None
    if r.uuid_generated:
        r.uuid_generated = False
        return canonical
    if canonical != uuid:
        raise r.fail(E.INVALID_VALUE, el, "UUID mismatch between <uuid> and <sysinfo>",
                     f"write the domain's uuid ({uuid}) in <entry name='uuid'> or remove it")
    return uuid


def format_sysinfo(info: Sysinfo, w: Writer) -> None:
    decl.write(info, "sysinfo", w, 1)
