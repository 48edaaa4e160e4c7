"""The reader: safe loading of domain XML and element/attribute access with coded errors.

`load()` turns text or bytes into an lxml tree (no DTD, no entities, no network). A
`Reader` walks that tree for the element parsers (`tapvirt.conf.domain`, the family modules
in `tapvirt.conf.devices`, the declarations in `tapvirt.conf.decl`): every error it raises
names the element or attribute by its XPath, the line, libvirt's message where libvirt has
one, and the fix. It also carries the parse's state (the random source for generated MACs
and uuids, and what was generated), so that tests can seed it.

lxml is imported only when a document is loaded: the start path, which reads a cached
model, never imports this module's heavy part.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Mapping
from enum import StrEnum
from typing import TYPE_CHECKING, TypeVar

from tapvirt.conf import errors as E
from tapvirt.conf.rules import IFNAME_RE, UINT_RE
from tapvirt.errors import ErrorCode, TapvirtError
from tapvirt.netcodes import INVALID_NAME as INVALID_IFNAME

if TYPE_CHECKING:
    from lxml import etree

__all__ = ["Found", "Reader", "clip", "load", "qname", "short"]

_E = TypeVar("_E", bound=StrEnum)
Found = Mapping[str, list["etree._Element"]]  # the children of an element, by tag


def load(data: str | bytes, source: str) -> etree._Element:
    """Well-formed XML, safely: no DOCTYPE, no entities, comments and PIs dropped."""
    from lxml import etree

    if isinstance(data, str):
        try:
            raw = data.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise TapvirtError(
                E.XML_MALFORMED, source, f"the text is not valid Unicode ({exc.reason})",
                "save the file as UTF-8",
            ) from None
        encoding: str | None = "utf-8"  # overrides the declaration: we already have text
    else:
        raw, encoding = data, None
    parser = etree.XMLParser(
        encoding=encoding, resolve_entities=False, no_network=True, load_dtd=False,
        remove_comments=True, remove_pis=True, huge_tree=False, dtd_validation=False,
    )
    try:
        root = etree.fromstring(raw, parser)
    except etree.XMLSyntaxError as exc:
        line = exc.position[0] if exc.position else None
        msg = exc.msg or str(exc)
        raise TapvirtError(
            E.XML_MALFORMED, source, msg, "fix the XML syntax at that place", line=line,
        ) from None
    except (ValueError, LookupError) as exc:  # e.g. an unknown declared encoding
        raise TapvirtError(
            E.XML_MALFORMED, source, str(exc), "save the file as UTF-8 without odd declarations"
        ) from None
    if root is None:
        raise TapvirtError(E.XML_MALFORMED, source, "the document is empty", "write a <domain>")
    doc = root.getroottree()
    if getattr(doc.docinfo, "doctype", "") or doc.docinfo.internalDTD is not None:
        raise TapvirtError(
            E.XML_DOCTYPE, source, "a DOCTYPE declaration is not allowed in domain XML",
            "remove the <!DOCTYPE ...> line", line=1,
        )
    for node in root.iter():
        if not isinstance(node.tag, str):  # an entity reference left unresolved
            raise TapvirtError(
                E.XML_DOCTYPE, source, f"entity reference {node!s} is not allowed",
                "write the text literally", line=line_of(node),
            )
    return root


class Reader:
    """Element access for the parsers of one document, with coded errors."""

    def __init__(self, root: etree._Element, source: str, rand: random.Random) -> None:
        self.root = root
        self.tree = root.getroottree()
        self.source = source
        self.rand = rand
        self.uuid_generated = False
        self.generated_macs: list[str] = []
        self.live = False  # live XML: tapvirt-assigned aliases are kept as they are

    # -- errors

    def path(self, el: etree._Element, attr: str | None = None) -> str:
        p = self.tree.getpath(el)
        return f"{p}/@{attr}" if attr else p

    def fail(
        self, code: ErrorCode, el: etree._Element, cause: str, fix: str,
        attr: str | None = None,
    ) -> TapvirtError:
        """The error to raise for `el` (or its attribute `attr`)."""
        return TapvirtError(
            code, self.path(el, attr), cause, fix, line=line_of(el),
            details={"source": self.source},
        )

    # -- structure

    def shape(
        self,
        el: etree._Element,
        attrs: Iterable[str] = (),
        children: Iterable[str] = (),
        *,
        multi: Iterable[str] = (),
        text: bool = False,
        required_attrs: Iterable[str] = (),
    ) -> dict[str, list[etree._Element]]:
        """Check `el` against its allowed attributes/children; return children by tag.

        Anything not allowed is refused by name (never silently dropped)."""
        allowed_attrs = set(attrs)
        for name in el.attrib:
            if name not in allowed_attrs:
                shown = qname(str(name))
                raise self.fail(
                    E.UNSUPPORTED_ATTRIBUTE, el,
                    f"attribute '{shown}' of <{qname(el.tag)}> is not supported by tapvirt",
                    _allowed_hint("attributes", allowed_attrs), attr=shown,
                )
        for name in required_attrs:
            if el.get(name) is None:
                raise self.fail(
                    E.MISSING_ATTRIBUTE, el,
                    f"element <{el.tag}> needs the attribute '{name}'",
                    f"add {name}='...' to <{el.tag}>",
                )
        allowed = set(children)
        many = set(multi)
        found: dict[str, list[etree._Element]] = {}
        for child in el:
            tag = child.tag
            if not isinstance(tag, str) or tag not in allowed:
                shown = qname(str(tag))
                raise self.fail(
                    E.UNSUPPORTED_ELEMENT, child,
                    f"element <{shown}> inside <{el.tag}> is not supported by tapvirt",
                    f"remove <{shown}>; {_allowed_hint('children', allowed)}",
                )
            lst = found.setdefault(tag, [])
            if lst and tag not in many:
                raise self.fail(
                    E.DUPLICATE_ELEMENT, child,
                    f"element <{tag}> may appear only once inside <{el.tag}>",
                    f"keep one <{tag}> (the first is at line {lst[0].sourceline})",
                )
            lst.append(child)
            if child.tail is not None and child.tail.strip():
                raise self.fail(
                    E.UNEXPECTED_TEXT, el, f"unexpected text {short(child.tail)} in <{el.tag}>",
                    "remove the text",
                )
        if not text and el.text is not None and el.text.strip():
            raise self.fail(
                E.UNEXPECTED_TEXT, el, f"element <{el.tag}> holds no text, found "
                f"{short(el.text)}", "remove the text",
            )
        return found

    def one(self, found: Found, tag: str) -> etree._Element | None:
        lst = found.get(tag)
        return lst[0] if lst else None

    def need(self, found: Found, tag: str, parent: etree._Element) -> etree._Element:
        el = self.one(found, tag)
        if el is None:
            raise self.fail(
                E.MISSING_ELEMENT, parent, f"element <{parent.tag}> needs a <{tag}> element",
                f"add <{tag}> inside <{parent.tag}>",
            )
        return el

    # -- values

    def text(
        self, el: etree._Element, *, strip: bool = False, attrs: Iterable[str] = ()
    ) -> str:
        self.shape(el, attrs, text=True)
        value = el.text or ""
        if strip:
            value = value.strip()
        if not value:
            raise self.fail(
                E.INVALID_VALUE, el, f"element <{el.tag}> must not be empty",
                f"write a value inside <{el.tag}>",
            )
        return value

    def enum(
        self, el: etree._Element, attr: str, enum: type[_E], *, text: str | None = None
    ) -> _E:
        value = el.get(attr) if text is None else text
        assert value is not None  # callers check presence first
        choices = [m.value for m in enum]
        if value not in choices:
            where = (
                f"attribute '{attr}' in element '{el.tag}'" if text is None
                else f"element '{el.tag}'"
            )
            raise self.fail(
                E.INVALID_VALUE, el, f"Invalid value for {where}: '{clip(value)}'.",
                f"use one of: {', '.join(choices)}", attr=attr if text is None else None,
            )
        return enum(value)

    def uint(
        self, el: etree._Element, attr: str | None, lo: int, hi: int,
        code: ErrorCode = E.INVALID_VALUE,
    ) -> int:
        # no white space around numbers: libvirt's schema (xmllint) refuses it
        raw = el.get(attr) if attr else (el.text or "")
        assert raw is not None  # callers check presence first
        what = f"attribute '{attr}' in element '{el.tag}'" if attr else f"element '{el.tag}'"
        if not UINT_RE.match(raw):
            raise self.fail(
                E.INVALID_VALUE, el,
                f"Invalid value for {what}: '{clip(raw)}'. Expected non-negative integer value",
                f"write a whole number in {lo}..{hi}", attr=attr,
            )
        # cap the digits: int() of thousands of digits is slow (and refused beyond 4300)
        value = int(raw) if len(raw) <= 30 else hi + 1
        if not lo <= value <= hi:
            raise self.fail(
                code, el, f"{what} is {clip(raw)}, outside {lo}..{hi}",
                f"write a number in {lo}..{hi}", attr=attr,
            )
        return value

    def abspath(self, el: etree._Element, attr: str | None, value: str) -> str:
        # libvirt's absFilePath: '/' and at least one more character, all on one line
        if len(value) < 2 or value[0] != "/" or "\n" in value or "\r" in value:
            where = f"attribute '{attr}'" if attr else f"<{el.tag}>"
            raise self.fail(
                E.INVALID_PATH, el, f"{where} must be an absolute path, found {short(value)}",
                "write the full path starting with '/'", attr=attr,
            )
        return value

    def ifname(self, el: etree._Element, attr: str) -> str:
        value = el.get(attr)
        assert value is not None
        if not IFNAME_RE.match(value) or value in (".", ".."):
            raise self.fail(
                INVALID_IFNAME, el,
                f"'{clip(value)}' is not a valid network device name (1-15 characters of "
                "A-Z a-z 0-9 _ . -)",
                "use the device's exact name as `ip link` shows it", attr=attr,
            )
        return value


def qname(tag: str) -> str:
    """`{ns}local` -> a readable name for messages."""
    if tag.startswith("{"):
        ns, _, local = tag[1:].partition("}")
        return f"{local} (namespace {ns})"
    return tag


def line_of(el: etree._Element) -> int | None:
    line = el.sourceline
    return line if isinstance(line, int) else None


def clip(value: str, limit: int = 40) -> str:
    return value if len(value) <= limit else value[:limit] + "..."


def short(value: str) -> str:
    return repr(clip(value.strip() or value))


def _allowed_hint(what: str, allowed: set[str]) -> str:
    if not allowed:
        return f"this element takes no {what}"
    return f"supported {what}: {', '.join(sorted(allowed))}"
