"""One declaration per attribute: parse, range errors and canonical format derive from it.

A family module declares its element as a frozen dataclass whose fields say where each
value lives in the XML and what it may be::

    @dataclass(frozen=True)
    class Memballoon:
        model: MemballoonModel = decl.enum("@model", MemballoonModel, required=True)
        autodeflate: bool | None = decl.onoff("@autodeflate")
        stats_period: int | None = decl.uint("stats/@period", 0, 2**31 - 1)

    balloon = decl.read(reader, element, Memballoon)   # refuses anything undeclared
    decl.write(balloon, "memballoon", w, depth=2)      # canonical XML, same order

Paths: `@attr` (an attribute of the element), `child/@attr` (of a child element, which
appears at most once; `required=True` there means "required when the child is present"),
`text()` or `child/text()` (text), `child` (a flag element such as
`<acpi/>`, or a nested declared element, or a list of them). Fields without a
declaration are not XML: the family module passes them to `read(..., **given)`.

The canonical form writes a value unless it is None (a flag unless it is False): so absent
stays absent and `write` after `read` is a fixed point. Children are written in the order
their first field appears in the class, attributes in field order: declare fields in
`virsh dumpxml` order. Cross-field rules stay in the family module (after `read`).

This module imports nothing heavy (the start path unpickles models that use it); the
structure of each class is derived once, on first use.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from tapvirt.conf import errors as E
from tapvirt.conf.xmlout import IND, Writer, a, t

if TYPE_CHECKING:
    from lxml import etree

    from tapvirt.conf.xml import Found, Reader
    from tapvirt.errors import ErrorCode

__all__ = [
    "Spec", "element", "elements", "enum", "flag", "onoff", "path", "read", "read_fields",
    "string", "text", "uint", "write", "write_attrs", "write_children", "yesno",
]

T = TypeVar("T")
Kind = Literal[
    "str", "enum", "uint", "yesno", "onoff", "flag", "path", "text", "element", "elements"
]
_MISSING: Any = dataclasses.MISSING


@dataclass(frozen=True, slots=True)
class Spec:
    """Where a value lives and what it may be."""

    path: str
    kind: Kind
    required: bool = False
    enum: type[StrEnum] | None = None
    lo: int = 0
    hi: int = 2**64 - 1
    pattern: re.Pattern[str] | None = None
    fix: str | None = None  # the fix shown for a bad value (default: derived)
    code: ErrorCode | None = None  # the error code of an out-of-range number
    cls: type | None = None  # element(s): the nested declared class


def _field(spec: Spec, default: Any) -> Any:
    if spec.kind == "elements":
        return dataclasses.field(default=(), metadata={"xml": spec})
    # required: of an own attribute or a child element, the element needs it; of a
    # child's attribute (`child/@a`), the child needs it when present (None when absent)
    if spec.required and (spec.kind == "element" or "/" not in spec.path):
        return dataclasses.field(metadata={"xml": spec})
    return dataclasses.field(default=default, metadata={"xml": spec})


# --- the declarations (each returns a dataclass field) ---------------------------------


def string(p: str, *, required: bool = False, default: str | None = None,
           pattern: re.Pattern[str] | None = None, fix: str | None = None) -> Any:
    """Free text in an attribute (optionally matching `pattern`, a full match)."""
    return _field(Spec(p, "str", required, pattern=pattern, fix=fix), default)


def enum(p: str, values: type[StrEnum], *, required: bool = False,
         default: StrEnum | None = None) -> Any:
    """One of a StrEnum's values: libvirt's "Invalid value for attribute ..." otherwise."""
    return _field(Spec(p, "enum", required, enum=values), default)


def uint(p: str, lo: int = 0, hi: int = 2**64 - 1, *, required: bool = False,
         default: int | None = None, code: ErrorCode | None = None) -> Any:
    """A whole number in lo..hi (an error with `code`, default invalid-value, outside)."""
    return _field(Spec(p, "uint", required, lo=lo, hi=hi, code=code), default)


def yesno(p: str, *, required: bool = False, default: bool | None = None) -> Any:
    """'yes'/'no' -> True/False."""
    return _field(Spec(p, "yesno", required), default)


def onoff(p: str, *, required: bool = False, default: bool | None = None) -> Any:
    """'on'/'off' -> True/False."""
    return _field(Spec(p, "onoff", required), default)


def path(p: str, *, required: bool = False, default: str | None = None) -> Any:
    """An absolute file path (libvirt's absFilePath)."""
    return _field(Spec(p, "path", required), default)


def text(p: str = "text()", *, required: bool = False, default: str | None = None) -> Any:
    """The text of the element (`text()`) or of a child (`child/text()`)."""
    return _field(Spec(p, "text", required), default)


def flag(p: str) -> Any:
    """An empty child element whose presence means True (`<acpi/>`)."""
    return _field(Spec(p, "flag"), False)


def element(p: str, cls: type, *, required: bool = False) -> Any:
    """A nested declared element that appears at most once (None when absent)."""
    return _field(Spec(p, "element", required, cls=cls), None)


def elements(p: str, cls: type) -> Any:
    """A nested declared element that may repeat: a tuple, in document order."""
    return _field(Spec(p, "elements", cls=cls), ())


# --- the derived structure ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Child:
    tag: str
    fields: tuple[tuple[str, str, Spec], ...]  # (field name, attribute or "", spec)
    text: bool
    multi: bool


@dataclass(frozen=True, slots=True)
class _Shape:
    own: tuple[tuple[str, str, Spec], ...]  # attributes ("" = text()) of the element
    children: tuple[_Child, ...]
    has_text: bool


_SHAPES: dict[type, _Shape] = {}


def _is_value(spec: Spec) -> bool:
    return spec.kind not in ("flag", "element", "elements")


def _shape(cls: type) -> _Shape:
    shape = _SHAPES.get(cls)
    if shape is not None:
        return shape
    own: list[tuple[str, str, Spec]] = []
    groups: dict[str, list[tuple[str, str, Spec]]] = {}
    for f in dataclasses.fields(cls):
        spec = f.metadata.get("xml")
        if spec is None:
            continue
        head, _, rest = spec.path.partition("/")
        if head.startswith("@"):
            own.append((f.name, head[1:], spec))
        elif head == "text()":
            own.append((f.name, "", spec))
        else:
            attr = rest[1:] if rest.startswith("@") else ""
            groups.setdefault(head, []).append((f.name, attr, spec))
    # a path ending in text() (any kind: text, uint, string ...) reads the element's text
    children = tuple(
        _Child(tag, tuple(fs), any(not a and _is_value(s) for _, a, s in fs),
               any(s.kind == "elements" for _, _, s in fs))
        for tag, fs in groups.items()
    )
    shape = _Shape(tuple(own), children, any(not a for _, a, _ in own))
    _SHAPES[cls] = shape
    return shape


# --- reading ---------------------------------------------------------------------------


def read_fields(
    r: Reader, el: etree._Element, cls: type, *,
    extra_attrs: Iterable[str] = (), extra_children: Iterable[str] = (),
    extra_multi: Iterable[str] = (),
) -> tuple[dict[str, Any], Found]:
    """The declared values of `el` by field name, and the `extra_children` found.

    Attributes and children that are neither declared nor extra are refused by name."""
    sh = _shape(cls)
    extra_c = tuple(extra_children)
    found = r.shape(
        el, (*(n for _, n, _ in sh.own if n), *extra_attrs),
        (*(c.tag for c in sh.children), *extra_c),
        multi=(*(c.tag for c in sh.children if c.multi), *extra_multi),
        text=sh.has_text,
    )
    values: dict[str, Any] = {}
    for name, attr, spec in sh.own:
        raw = el.get(attr) if attr else el.text
        if raw is not None:
            values[name] = _value(r, el, attr or None, spec, raw)
        elif spec.required:
            raise _missing(r, el, attr)
    for child in sh.children:
        els = found.get(child.tag, [])
        if child.multi:
            (name, _, spec), = child.fields
            assert spec.cls is not None
            values[name] = tuple(read(r, c, spec.cls) for c in els)
            continue
        c = els[0] if els else None
        if c is None:
            for _, _, spec in child.fields:
                if spec.required and spec.kind == "element":
                    raise r.fail(
                        E.MISSING_ELEMENT, el,
                        f"element <{el.tag}> needs a <{child.tag}> element",
                        f"add <{child.tag}> inside <{el.tag}>",
                    )
            continue
        for name, _, spec in child.fields:
            if spec.kind == "element":
                assert spec.cls is not None
                values[name] = read(r, c, spec.cls)
                break
        else:
            r.shape(c, [n for _, n, _ in child.fields if n], text=child.text)
            for name, attr, spec in child.fields:
                if spec.kind == "flag":
                    values[name] = True
                    continue
                raw = c.get(attr) if attr else c.text
                if raw is not None:
                    values[name] = _value(r, c, attr or None, spec, raw)
                elif spec.required:
                    raise _missing(r, c, attr)
    return values, {tag: found[tag] for tag in extra_c if tag in found}


def read(r: Reader, el: etree._Element, cls: type[T], **given: Any) -> T:
    """`cls` from `el`: its declared values plus the undeclared fields in `given`."""
    values, _ = read_fields(r, el, cls)
    return cls(**values, **given)


def _value(r: Reader, el: etree._Element, attr: str | None, spec: Spec, raw: str) -> Any:
    kind = spec.kind
    if kind == "uint":
        if spec.code is None:
            return r.uint(el, attr, spec.lo, spec.hi)
        return r.uint(el, attr, spec.lo, spec.hi, spec.code)
    if kind == "enum":
        assert spec.enum is not None
        if attr is None:
            return r.enum(el, "", spec.enum, text=raw)
        return r.enum(el, attr, spec.enum)
    if kind == "path":
        return r.abspath(el, attr, raw)
    if kind in ("yesno", "onoff"):
        yes, no = ("yes", "no") if kind == "yesno" else ("on", "off")
        if raw not in (yes, no):
            raise _invalid(r, el, attr, raw, f"use {yes} or {no}")
        return raw == yes
    if kind == "text":
        if not raw:
            raise r.fail(E.INVALID_VALUE, el, f"element <{el.tag}> must not be empty",
                         f"write a value inside <{el.tag}>")
        return raw
    if spec.pattern is not None and not spec.pattern.match(raw):
        raise _invalid(r, el, attr, raw, spec.fix or "see docs/domain-xml.md for the format")
    return raw


def _invalid(r: Reader, el: etree._Element, attr: str | None, raw: str, fix: str) -> Exception:
    from tapvirt.conf.xml import clip

    where = f"attribute '{attr}' in element '{el.tag}'" if attr else f"element '{el.tag}'"
    return r.fail(E.INVALID_VALUE, el, f"Invalid value for {where}: '{clip(raw)}'.", fix,
                  attr=attr)


def _missing(r: Reader, el: etree._Element, attr: str) -> Exception:
    return r.fail(E.MISSING_ATTRIBUTE, el, f"element <{el.tag}> needs the attribute "
                  f"'{attr}'", f"add {attr}='...' to <{el.tag}>")



# --- writing ---------------------------------------------------------------------------


def _fmt(spec: Spec, value: Any) -> str:
    if spec.kind == "yesno":
        return "yes" if value else "no"
    if spec.kind == "onoff":
        return "on" if value else "off"
    return str(value)


def write_attrs(obj: object) -> str:
    """` k='v'` for the declared attributes of `obj` that are set."""
    out = []
    for name, attr, spec in _shape(type(obj)).own:
        value = getattr(obj, name)
        if attr and value is not None:
            out.append(f" {attr}={a(_fmt(spec, value))}")
    return "".join(out)


def write_children(obj: object, w: Writer, depth: int) -> bool:
    """Write the declared children of `obj` at `depth`; whether anything was written."""
    ind = IND * depth
    wrote = False
    for child in _shape(type(obj)).children:
        attrs: list[str] = []
        body: str | None = None
        flagged = False
        for name, attr, spec in child.fields:
            value = getattr(obj, name)
            if spec.kind == "elements":
                assert spec.cls is not None
                for item in value:
                    write(item, child.tag, w, depth)
                    wrote = True
            elif spec.kind == "element":
                if value is not None:
                    write(value, child.tag, w, depth)
                    wrote = True
            elif spec.kind == "flag":
                flagged = flagged or bool(value)
            elif value is not None:
                if attr:
                    attrs.append(f" {attr}={a(_fmt(spec, value))}")
                else:
                    body = t(_fmt(spec, value))
        if body is not None:
            w(f"{ind}<{child.tag}{''.join(attrs)}>{body}</{child.tag}>")
            wrote = True
        elif attrs or flagged:
            w(f"{ind}<{child.tag}{''.join(attrs)}/>")
            wrote = True
    return wrote


def write(obj: object, tag: str, w: Writer, depth: int,
          extra: Callable[[Writer, int], None] | None = None) -> None:
    """The whole element: `<tag attrs>` + declared children (+ `extra` ones) or text."""
    ind = IND * depth
    head = f"{ind}<{tag}{write_attrs(obj)}"
    sh = _shape(type(obj))
    for name, attr, spec in sh.own:
        if not attr and getattr(obj, name) is not None:
            w(f"{head}>{t(_fmt(spec, getattr(obj, name)))}</{tag}>")
            return
    lines: list[str] = []
    write_children(obj, lines.append, depth + 1)
    if extra is not None:
        extra(lines.append, depth + 1)
    if not lines:
        w(f"{head}/>")
        return
    w(f"{head}>")
    for line in lines:
        w(line)
    w(f"{ind}</{tag}>")
