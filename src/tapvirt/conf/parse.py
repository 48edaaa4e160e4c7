"""libvirt domain XML -> `tapvirt.conf.model.Domain`.

One walk over the tree checks, element by element, with errors that name the element or
attribute, its line and the fix:

* structure: every element and attribute outside the supported subset is rejected
  (never silently dropped), required parts must be present, values well-formed;
* libvirt's semantic rules: the managed tristate, reserved-prefix blanking, unicast
  MACs, queue/MTU ranges, aliases, boot orders, generated MACs and uuid.

Then the RelaxNG subset in `schema/domain.rng` runs as a safety net (`tapvirt.conf.schema`).

Randomness (generated MACs and uuid) comes from `rand`, so that tests can seed it.
"""

from __future__ import annotations

import random
import uuid as uuidlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from tapvirt.conf import errors as E
from tapvirt.conf.model import (
    BootDev,
    Domain,
    DomainType,
    Features,
    LifecycleAction,
    Os,
)
from tapvirt.conf.rules import (
    ARCHES,
    IFNAME_RE,
    MAC_RE,
    MACHINE_RE,
    MAX_MEMORY_KIB,
    MAX_NAME,
    MAX_VCPUS,
    NAME_RE,
    UINT_RE,
    UNIT_BYTES,
    UUID_RE,
)
from tapvirt.errors import FILE_UNREADABLE, ErrorCode, TapvirtError
from tapvirt.netcodes import INVALID_NAME as INVALID_IFNAME

if TYPE_CHECKING:
    from lxml import etree

__all__ = [
    "Parsed",
    "parse_document",
    "parse_domain",
    "parse_domain_file",
]


_E = TypeVar("_E", bound=StrEnum)


@dataclass(frozen=True)
class Parsed:
    """A parsed domain plus what the parser filled in (the store needs to know)."""

    domain: Domain
    uuid_generated: bool
    generated_macs: tuple[str, ...] = ()


def parse_domain(
    text: str, *, source: str = "<string>", rand: random.Random | None = None
) -> Domain:
    """Parse and validate libvirt domain XML; raise `TapvirtError` on any problem."""
    return parse_document(text, source=source, rand=rand).domain


def parse_domain_file(path: str | Path, *, rand: random.Random | None = None,
                      live: bool = False) -> Domain:
    """Read and parse a domain XML file (its own encoding declaration is honoured).
    live: the file is a running guest's live XML (aliases tapvirt assigned may have gaps
    after hotplug and unplug: net0, net2)."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise TapvirtError(
            FILE_UNREADABLE, str(path), f"cannot read the file: {exc.strerror or exc}",
            "check the path and its permissions",
        ) from None
    return parse_document(data, source=str(path), rand=rand, live=live).domain


def parse_document(
    data: str | bytes, *, source: str = "<string>", rand: random.Random | None = None,
    live: bool = False,
) -> Parsed:
    """Parse `data` (text, or bytes in the encoding they declare) into a `Parsed`."""
    root = _load(data, source)
    parser = _Parser(root, source, rand if rand is not None else random.SystemRandom())
    parser.live = live
    dom = parser.domain()
    from tapvirt.conf import schema

    schema.check(root, source)
    return Parsed(dom, parser.uuid_generated, tuple(parser.generated_macs))


# --- pass 0: well-formed XML, safely ------------------------------------------------


def _load(data: str | bytes, source: str) -> etree._Element:
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
                "write the text literally", line=_line(node),
            )
    return root


# --- the parser -----------------------------------------------------------------------


class _Parser:
    def __init__(self, root: etree._Element, source: str, rand: random.Random) -> None:
        self.root = root
        self.tree = root.getroottree()
        self.source = source
        self.rand = rand
        self.uuid_generated = False
        self.generated_macs: list[str] = []
        self.live = False  # parsing live XML: tapvirt-assigned aliases are kept as they are

    # -- error helpers

    def path(self, el: etree._Element, attr: str | None = None) -> str:
        p = self.tree.getpath(el)
        return f"{p}/@{attr}" if attr else p

    def fail(
        self, code: ErrorCode, el: etree._Element, cause: str, fix: str,
        attr: str | None = None,
    ) -> TapvirtError:
        return TapvirtError(
            code, self.path(el, attr), cause, fix, line=_line(el),
            details={"source": self.source},
        )

    # -- structure helpers

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
        """Check `el` against its allowed attributes/children; return children by tag."""
        allowed_attrs = set(attrs)
        for name in el.attrib:
            if name not in allowed_attrs:
                shown = _qname(str(name))
                raise self.fail(
                    E.UNSUPPORTED_ATTRIBUTE, el,
                    f"attribute '{shown}' of <{_qname(el.tag)}> is not supported by tapvirt",
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
                shown = _qname(str(tag))
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
                    E.UNEXPECTED_TEXT, el, f"unexpected text {_short(child.tail)} in <{el.tag}>",
                    "remove the text",
                )
        if not text and el.text is not None and el.text.strip():
            raise self.fail(
                E.UNEXPECTED_TEXT, el, f"element <{el.tag}> holds no text, found "
                f"{_short(el.text)}", "remove the text",
            )
        return found

    def one(
        self, found: Mapping[str, list[etree._Element]], tag: str
    ) -> etree._Element | None:
        lst = found.get(tag)
        return lst[0] if lst else None

    def need(
        self, found: Mapping[str, list[etree._Element]], tag: str, parent: etree._Element
    ) -> etree._Element:
        el = self.one(found, tag)
        if el is None:
            raise self.fail(
                E.MISSING_ELEMENT, parent, f"element <{parent.tag}> needs a <{tag}> element",
                f"add <{tag}> inside <{parent.tag}>",
            )
        return el

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
                E.INVALID_VALUE, el, f"Invalid value for {where}: '{_clip(value)}'.",
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
                f"Invalid value for {what}: '{_clip(raw)}'. Expected non-negative integer value",
                f"write a whole number in {lo}..{hi}", attr=attr,
            )
        # cap the digits: int() of thousands of digits is slow (and refused beyond 4300)
        value = int(raw) if len(raw) <= 30 else hi + 1
        if not lo <= value <= hi:
            raise self.fail(
                code, el, f"{what} is {_clip(raw)}, outside {lo}..{hi}",
                f"write a number in {lo}..{hi}", attr=attr,
            )
        return value

    def abspath(self, el: etree._Element, attr: str | None, value: str) -> str:
        # libvirt's absFilePath: '/' and at least one more character, all on one line
        if len(value) < 2 or value[0] != "/" or "\n" in value or "\r" in value:
            where = f"attribute '{attr}'" if attr else f"<{el.tag}>"
            raise self.fail(
                E.INVALID_PATH, el, f"{where} must be an absolute path, found {_short(value)}",
                "write the full path starting with '/'", attr=attr,
            )
        return value

    def ifname(self, el: etree._Element, attr: str) -> str:
        value = el.get(attr)
        assert value is not None
        if not IFNAME_RE.match(value) or value in (".", ".."):
            raise self.fail(
                INVALID_IFNAME, el,
                f"'{_clip(value)}' is not a valid network device name (1-15 characters of "
                "A-Z a-z 0-9 _ . -)",
                "use the device's exact name as `ip link` shows it", attr=attr,
            )
        return value

    # -- the domain

    def domain(self) -> Domain:
        root = self.root
        if root.tag != "domain":
            raise self.fail(
                E.NOT_A_DOMAIN, root, f"the root element is <{_qname(str(root.tag))}>, "
                "not <domain>", "pass a libvirt domain definition (<domain type='qemu'>...)",
            )
        found = self.shape(
            root, ("type",),
            ("name", "uuid", "title", "description", "memory", "currentMemory", "vcpu",
             "os", "features", "on_poweroff", "on_reboot", "on_crash", "devices"),
            required_attrs=("type",),
        )
        dtype = self.enum(root, "type", DomainType)
        name = self.name(self.need(found, "name", root))
        uuid_el = self.one(found, "uuid")
        if uuid_el is not None:
            uuid = self.uuid(uuid_el)
        else:
            uuid = str(uuidlib.UUID(int=self.rand.getrandbits(128), version=4))
            self.uuid_generated = True
        title = None
        if (t := self.one(found, "title")) is not None:
            title = self.text(t)
            if "\n" in title:
                raise self.fail(
                    E.INVALID_VALUE, t, "Domain title can't contain newlines",
                    "put longer text into <description>",
                )
        description = None
        if (d := self.one(found, "description")) is not None:
            self.shape(d, text=True)
            description = d.text or ""
        memory = self.memory(self.need(found, "memory", root))
        current = None
        if (c := self.one(found, "currentMemory")) is not None:
            current = self.memory(c)
            if current > memory:
                raise self.fail(
                    E.INVALID_MEMORY, c,
                    f"currentMemory ({current} KiB) is larger than memory ({memory} KiB)",
                    "make <currentMemory> at most <memory> (libvirt would silently clamp it)",
                )
        vcpus = 1
        if (v := self.one(found, "vcpu")) is not None:
            self.shape(v, ("placement",), text=True)
            if v.get("placement") not in (None, "static"):
                raise self.fail(
                    E.INVALID_VALUE, v,
                    f"Invalid value for attribute 'placement' in element 'vcpu': "
                    f"'{v.get('placement')}'.", "use placement='static' or leave it out",
                    attr="placement",
                )
            vcpus = self.uint(v, None, 1, MAX_VCPUS)
        os_ = self.os(self.need(found, "os", root))
        features = Features()
        if (f := self.one(found, "features")) is not None:
            ff = self.shape(f, (), ("acpi",))
            if (a := self.one(ff, "acpi")) is not None:
                self.shape(a)
            features = Features(acpi=a is not None)
        actions: dict[str, LifecycleAction] = {}
        for tag in ("on_poweroff", "on_reboot", "on_crash"):
            if (el := self.one(found, tag)) is not None:
                actions[tag] = self.enum(el, "", LifecycleAction, text=self.text(el, strip=True))
        devices_el = self.one(found, "devices")
        dom = Domain(
            name=name, uuid=uuid, type=dtype, title=title, description=description,
            memory_kib=memory, current_memory_kib=current, vcpus=vcpus, os=os_,
            features=features, **actions,  # type: ignore[arg-type]
        )
        if devices_el is not None:
            from tapvirt.conf.devices import parse_devices

            dom = replace(dom, devices=parse_devices(self, devices_el, os_))
        return dom

    def name(self, el: etree._Element) -> str:
        value = self.text(el)
        if len(value) > MAX_NAME or not NAME_RE.match(value):
            raise self.fail(
                E.INVALID_NAME, el,
                f"domain name {_short(value)} is not a safe file name: use 1-{MAX_NAME} of "
                "A-Z a-z 0-9 _ . + - and do not start with '.', '+' or '-'",
                "rename the domain, e.g. <name>web-1</name>",
            )
        return value

    def uuid(self, el: etree._Element) -> str:
        value = self.text(el)
        if not UUID_RE.match(value):
            raise self.fail(
                E.INVALID_UUID, el, f"malformed uuid element: {_short(value)}",
                "write 32 hex digits, e.g. 4dea22b3-1d52-d8f3-2516-782e98ab3fa0, or remove "
                "<uuid> to have one generated",
            )
        return str(uuidlib.UUID(hex=value))

    def memory(self, el: etree._Element) -> int:
        self.shape(el, ("unit",), text=True)
        unit = el.get("unit", "KiB")
        mult = UNIT_BYTES.get(unit.lower())
        if mult is None:
            raise self.fail(
                E.INVALID_MEMORY, el, f"unknown unit '{_clip(unit)}' in <{el.tag}>",
                "use one of b, KiB, MiB, GiB, TiB, k, M, G, T, KB, MB, GB, TB", attr="unit",
            )
        raw = el.text or ""  # digits only, as libvirt's schema wants them
        if not UINT_RE.match(raw):
            raise self.fail(
                E.INVALID_MEMORY, el, f"malformed size {_clip(raw)!r} in <{el.tag}>",
                f"write a whole number, e.g. <{el.tag} unit='MiB'>512</{el.tag}>",
            )
        value = (int(raw) if len(raw) <= 30 else MAX_MEMORY_KIB + 1) * mult
        kib = -(-value // 1024)  # libvirt rounds up to whole KiB
        if kib == 0:
            raise self.fail(
                E.INVALID_MEMORY, el, f"<{el.tag}> must be larger than zero",
                f"write a size, e.g. <{el.tag} unit='MiB'>512</{el.tag}>",
            )
        if kib > MAX_MEMORY_KIB:
            raise self.fail(
                E.INVALID_MEMORY, el, f"<{el.tag}> is too large", "write a realistic size"
            )
        return kib

    def os(self, el: etree._Element) -> Os:
        found = self.shape(
            el, (), ("type", "kernel", "initrd", "cmdline", "boot"), multi=("boot",)
        )
        type_el = self.need(found, "type", el)
        os_type = self.text(type_el, strip=True, attrs=("arch", "machine"))
        if os_type != "hvm":
            raise self.fail(
                E.INVALID_VALUE, type_el, f"Invalid value for element 'type': '{_clip(os_type)}'.",
                "tapvirt runs full virtual machines: write <type>hvm</type>",
            )
        arch = type_el.get("arch")
        if arch is not None and arch not in ARCHES:
            raise self.fail(
                E.INVALID_VALUE, type_el,
                f"Invalid value for attribute 'arch' in element 'type': '{_clip(arch)}'.",
                f"use one of: {', '.join(ARCHES)}", attr="arch",
            )
        machine = type_el.get("machine")
        if machine is not None and not MACHINE_RE.match(machine):
            raise self.fail(
                E.INVALID_VALUE, type_el,
                f"Invalid value for attribute 'machine' in element 'type': '{_clip(machine)}'.",
                "use a QEMU machine type such as pc, q35 or pc-i440fx-7.2", attr="machine",
            )
        paths: dict[str, str] = {}
        for tag in ("kernel", "initrd"):
            if (p := self.one(found, tag)) is not None:
                paths[tag] = self.abspath(p, None, self.text(p))
        cmdline = None
        if (c := self.one(found, "cmdline")) is not None:
            self.shape(c, text=True)
            cmdline = c.text or ""
            if "\n" in cmdline:
                raise self.fail(
                    E.INVALID_VALUE, c, "the kernel command line must be one line",
                    "join the arguments with spaces",
                )
        boots: list[BootDev] = []
        for b in found.get("boot", []):
            self.shape(b, ("dev",), required_attrs=("dev",))
            dev = self.enum(b, "dev", BootDev)
            if dev in boots:
                raise self.fail(
                    E.DUPLICATE_ELEMENT, b, f"boot device '{dev}' is listed twice",
                    "list each boot device once",
                )
            boots.append(dev)
        return Os(
            type="hvm", arch=arch, machine=machine, kernel=paths.get("kernel"),
            initrd=paths.get("initrd"), cmdline=cmdline, boot=tuple(boots),
        )

    # -- helpers the device parsers share

    def mac(self, el: etree._Element) -> str:
        self.shape(el, ("address",), required_attrs=("address",))
        raw = el.get("address", "")
        if not MAC_RE.match(raw):
            raise self.fail(
                E.INVALID_MAC, el, f"unable to parse mac address '{_clip(raw)}'",
                "write six hex octets, e.g. 52:54:00:12:34:56", attr="address",
            )
        mac = raw.lower()
        if int(mac[:2], 16) & 1:
            raise self.fail(
                E.MULTICAST_MAC, el, f"expected unicast mac address, found multicast '{mac}'",
                "clear the lowest bit of the first octet (e.g. 52:54:00:...)", attr="address",
            )
        return mac

    def new_mac(self) -> str:
        bits = self.rand.getrandbits(24)
        mac = "52:54:00:" + ":".join(f"{(bits >> s) & 0xFF:02x}" for s in (16, 8, 0))
        self.generated_macs.append(mac)
        return mac


def _qname(tag: str) -> str:
    """`{ns}local` -> `ns:local` for messages (namespaced elements are never supported)."""
    if tag.startswith("{"):
        ns, _, local = tag[1:].partition("}")
        return f"{local} (namespace {ns})"
    return tag


def _line(el: etree._Element) -> int | None:
    line = el.sourceline
    return line if isinstance(line, int) else None


def _clip(value: str, limit: int = 40) -> str:
    return value if len(value) <= limit else value[:limit] + "..."


def _short(value: str) -> str:
    return repr(_clip(value.strip() or value))


def _allowed_hint(what: str, allowed: set[str]) -> str:
    if not allowed:
        return f"this element takes no {what}"
    return f"supported {what}: {', '.join(sorted(allowed))}"


