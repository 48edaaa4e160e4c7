"""`<metadata>`: applications' own XML (libosinfo, KubeVirt, ...), kept verbatim.

Each child is stored as its exact serialized XML (with the namespace declarations it
needs) and written back as is, like libvirt. libvirt silently drops children without a
namespace and all but the first child of a namespace; tapvirt refuses both by name
instead, so nothing disappears unnoticed."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from tapvirt.conf import errors as E
from tapvirt.conf.xml import qname
from tapvirt.conf.xmlout import IND, Writer

if TYPE_CHECKING:
    from lxml import etree

    from tapvirt.conf.xml import Reader


@dataclass(frozen=True)
class Metadata:
    elements: tuple[str, ...] = ()  # each child's XML, e.g. <libosinfo:libosinfo xmlns:...>


def parse_metadata(r: Reader, el: etree._Element) -> Metadata:
    from lxml import etree

    if el.attrib:
        r.shape(el)  # refuses the attribute by name
    seen: dict[str, etree._Element] = {}
    out: list[str] = []
    for child in el:
        tag = str(child.tag)
        if not tag.startswith("{"):
            raise r.fail(
                E.INVALID_VALUE, child,
                f"element <{qname(tag)}> in <metadata> has no namespace (libvirt would drop "
                "it)", "put it in your application's namespace, e.g. "
                "<app:info xmlns:app='http://example.org/app/1'>",
            )
        ns = tag[1:].partition("}")[0]
        if ns in seen:
            raise r.fail(
                E.DUPLICATE_ELEMENT, child,
                f"a second element of namespace '{ns}' in <metadata> (libvirt keeps only "
                f"the first, at line {seen[ns].sourceline})",
                "merge them into one element of that namespace",
            )
        seen[ns] = child
        if child.tail is not None and child.tail.strip():
            raise r.fail(E.UNEXPECTED_TEXT, el, "text between the elements of <metadata>",
                         "remove the text")
        out.append(etree.tostring(child, encoding="unicode", with_tail=False))
    if el.text is not None and el.text.strip():
        raise r.fail(E.UNEXPECTED_TEXT, el, "<metadata> holds elements, not text",
                     "wrap the text in an element of your namespace")
    return Metadata(tuple(out))


def format_metadata(m: Metadata, w: Writer) -> None:
    if not m.elements:
        w(f"{IND}<metadata/>")
        return
    w(f"{IND}<metadata>")
    for item in m.elements:
        w(f"{IND * 2}{item}")
    w(f"{IND}</metadata>")
