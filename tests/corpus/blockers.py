"""Every element that blocks a document, not only the first: what each family is worth.

The parser stops at the first refusal. To see everything a refused document still needs,
the refused element (or attribute) is blanked out and the document parsed again, until it
is accepted or nothing more can be located (a refusal that names no single element, e.g.
a cross-device rule). Elements become comments with as many line breaks, so the line
numbers of the next errors still point into the original document.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from pathlib import Path

from lxml import etree

MAX_ROUNDS = 40


@dataclass(frozen=True)
class Blockers:
    keys: tuple[str, ...]  # 'code element' of every refusal, in the order met
    complete: bool  # False: stopped at a refusal that could not be blanked out


def _key(code: str, subject: str) -> str:
    return code + " " + re.sub(r"\[\d+\]", "", subject)


def _local(tag: str) -> str:
    return tag.split(":", 1)[-1].split("}", 1)[-1]


def _blank(root: etree._Element, code: str, subject: str, line: int | None) -> bool:
    """Blank out the element or attribute `subject` (an XPath-like path) at `line`: the
    attribute only when the attribute itself is unsupported; for any other refusal that
    names an attribute (a value, a named refusal) the whole element is what blocks."""
    steps = [s for s in re.sub(r"\[\d+\]", "", subject).split("/") if s]
    if not steps or line is None:
        return False
    attr = steps[-1][1:] if steps[-1].startswith("@") else None
    if attr is not None and code != "unsupported-attribute":
        steps, attr = steps[:-1], None
    name = _local(steps[-2] if attr else steps[-1])
    for el in root.iter():
        if not isinstance(el.tag, str) or getattr(el, "sourceline", None) != line:
            continue
        if _local(etree.QName(el).localname) != name:
            continue
        if attr is not None:
            for key in list(el.attrib):
                if _local(str(key)) == _local(attr):
                    del el.attrib[key]
                    return True
            return False
        parent = el.getparent()
        if parent is None:
            return False
        breaks = etree.tostring(el, encoding="unicode", with_tail=False).count("\n")
        comment = etree.Comment(" blanked " + "\n" * breaks)
        comment.tail = el.tail
        parent.replace(el, comment)
        return True
    return False


def blockers(path: Path) -> Blockers:
    from tapvirt.conf.parse import parse_domain
    from tapvirt.errors import TapvirtError

    try:
        root = etree.parse(str(path), etree.XMLParser(resolve_entities=False)).getroot()
    except etree.XMLSyntaxError:
        return Blockers(("xml-malformed",), False)
    keys: list[str] = []
    for _ in range(MAX_ROUNDS):
        text = etree.tostring(root, encoding="unicode")
        try:
            parse_domain(text, rand=random.Random(0))
        except TapvirtError as err:
            keys.append(_key(err.code.code, err.subject))
            if not _blank(root, err.code.code, err.subject, err.line):
                return Blockers(tuple(keys), False)
            continue
        except Exception as exc:  # a bug: counted, never hidden
            keys.append(f"CRASH {type(exc).__name__}")
            return Blockers(tuple(keys), False)
        return Blockers(tuple(keys), True)
    return Blockers(tuple(keys), False)
