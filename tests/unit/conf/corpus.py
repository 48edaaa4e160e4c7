"""The data-driven corpus of the definition layer: tests/data/xml2xml and tests/data/invalid."""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

from lxml import etree

DATA = Path(__file__).resolve().parents[2] / "data"
XML2XML = DATA / "xml2xml"
INVALID = DATA / "invalid"


def seeded() -> random.Random:
    """The random source of every corpus parse: generated MACs and uuids are stable."""
    return random.Random(1234)


def xml2xml_cases() -> list[Path]:
    return sorted(p for p in XML2XML.glob("*.xml") if not p.name.endswith(".out.xml"))


def expected_output(case: Path) -> Path:
    out = case.with_name(case.name[: -len(".xml")] + ".out.xml")
    return out if out.exists() else case


@dataclass(frozen=True)
class Expected:
    code: str
    fragment: str
    line: int | None


def invalid_cases() -> list[Path]:
    return sorted(INVALID.glob("*.xml"))


def expected_error(case: Path) -> Expected:
    """NAME.err: line 1 the code, line 2 a fragment of the message, optional 'line N'."""
    lines = case.with_suffix(".err").read_text().splitlines()
    line = None
    if len(lines) > 2 and lines[2].startswith("line "):
        line = int(lines[2].split()[1])
    return Expected(lines[0].strip(), lines[1].strip(), line)


# libxml2's RelaxNG engine (xmllint, virt-xml-validate) wrongly rejects some orders of
# <domain> and <os> children that libvirt's grammar allows (nested <interleave>s, e.g.
# <os><boot/><cmdline/><initrd/><boot/>...). libvirt itself parses any order, and so does
# tapvirt; before asking xmllint, put those children in libvirt's dumpxml order.
_ORDER = {
    "domain": ["name", "uuid", "title", "description", "memory", "currentMemory", "vcpu", "os",
               "features", "on_poweroff", "on_reboot", "on_crash", "devices"],
    "os": ["type", "kernel", "initrd", "cmdline", "boot"],
}


_ORDER_PARSER = etree.XMLParser(remove_comments=True, remove_pis=True, resolve_entities=False)


def in_libvirt_order(text: str) -> str:
    root = etree.fromstring(text.encode("utf-8"), _ORDER_PARSER)
    for el in [root, *root.iterfind("os")]:
        rank = _ORDER[str(el.tag)]
        children = sorted(el, key=lambda c: rank.index(c.tag) if c.tag in rank else len(rank))
        for c in children:
            el.append(c)  # re-appending moves it: the stable sort becomes the new order
    return etree.tostring(root, encoding="unicode")
