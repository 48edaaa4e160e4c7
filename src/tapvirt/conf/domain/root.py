"""`<domain>` itself: name, uuid, memory, vcpu, os, lifecycle actions; the other children
are parsed by their modules (`ELEMENTS`), `<devices>` by `tapvirt.conf.devices`.

`parse_domain_element` walks the root element and hands `<devices>` to
`tapvirt.conf.devices`. Errors name the element, its line, libvirt's message, the fix.
"""

from __future__ import annotations

import uuid as uuidlib
from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from tapvirt.conf import errors as E
from tapvirt.conf.devices import parse_devices
from tapvirt.conf.devices.refused import refuse_unprivileged
from tapvirt.conf.domain.clock import parse_clock
from tapvirt.conf.domain.features import check_features, parse_features
from tapvirt.conf.domain.metadata import parse_metadata
from tapvirt.conf.domain.pm import parse_pm
from tapvirt.conf.model import (
    BootDev,
    Domain,
    DomainType,
    LifecycleAction,
    Os,
)
from tapvirt.conf.rules import (
    ARCHES,
    MACHINE_RE,
    MAX_MEMORY_KIB,
    MAX_NAME,
    MAX_VCPUS,
    NAME_RE,
    UINT_RE,
    UNIT_BYTES,
    UUID_RE,
)
from tapvirt.conf.xml import clip, qname, short

if TYPE_CHECKING:
    from lxml import etree

    from tapvirt.conf.xml import Reader

__all__ = ["ELEMENTS", "parse_domain_element"]

# The <domain> children that have their own module: tag -> (Domain field, parser).
# Adding one: its module under conf/domain/, a field in model.Domain, a line here, a line
# in conf/format.py (libvirt's order), its grammar in schema/domain.rng.
ELEMENTS: dict[str, tuple[str, Callable[[Reader, etree._Element], Any]]] = {
    "metadata": ("metadata", parse_metadata),
    "features": ("features", parse_features),
    "clock": ("clock", parse_clock),
    "pm": ("pm", parse_pm),
}


def parse_domain_element(r: Reader) -> Domain:
    root = r.root
    if root.tag != "domain":
        raise r.fail(
            E.NOT_A_DOMAIN, root, f"the root element is <{qname(str(root.tag))}>, "
            "not <domain>", "pass a libvirt domain definition (<domain type='qemu'>...)",
        )
    # what cannot work unprivileged is refused by name before any generic check
    refuse_unprivileged(r, root)
    found = r.shape(
        root, ("type",),
        ("name", "uuid", "title", "description", "memory", "currentMemory", "vcpu",
         "os", "on_poweroff", "on_reboot", "on_crash", "devices", *ELEMENTS),
        required_attrs=("type",),
    )
    dtype = r.enum(root, "type", DomainType)
    name = _name(r, r.need(found, "name", root))
    uuid_el = r.one(found, "uuid")
    if uuid_el is not None:
        uuid = _uuid(r, uuid_el)
    else:
        uuid = str(uuidlib.UUID(int=r.rand.getrandbits(128), version=4))
        r.uuid_generated = True
    title = None
    if (t := r.one(found, "title")) is not None:
        title = r.text(t)
        if "\n" in title:
            raise r.fail(
                E.INVALID_VALUE, t, "Domain title can't contain newlines",
                "put longer text into <description>",
            )
    description = None
    if (d := r.one(found, "description")) is not None:
        r.shape(d, text=True)
        description = d.text or ""
    memory = _memory(r, r.need(found, "memory", root))
    current = None
    if (c := r.one(found, "currentMemory")) is not None:
        current = _memory(r, c)
        if current > memory:
            raise r.fail(
                E.INVALID_MEMORY, c,
                f"currentMemory ({current} KiB) is larger than memory ({memory} KiB)",
                "make <currentMemory> at most <memory> (libvirt would silently clamp it)",
            )
    vcpus = 1
    if (v := r.one(found, "vcpu")) is not None:
        r.shape(v, ("placement",), text=True)
        if v.get("placement") not in (None, "static"):
            raise r.fail(
                E.INVALID_VALUE, v,
                f"Invalid value for attribute 'placement' in element 'vcpu': "
                f"'{v.get('placement')}'.", "use placement='static' or leave it out",
                attr="placement",
            )
        vcpus = r.uint(v, None, 1, MAX_VCPUS)
    os_ = _os(r, r.need(found, "os", root))
    actions: dict[str, LifecycleAction] = {}
    for tag in ("on_poweroff", "on_reboot", "on_crash"):
        if (el := r.one(found, tag)) is not None:
            actions[tag] = r.enum(el, "", LifecycleAction, text=r.text(el, strip=True))
    devices_el = r.one(found, "devices")
    dom = Domain(
        name=name, uuid=uuid, type=dtype, title=title, description=description,
        memory_kib=memory, current_memory_kib=current, vcpus=vcpus, os=os_,
        **actions,  # type: ignore[arg-type]
    )
    parts = {field: parse(r, el) for tag, (field, parse) in ELEMENTS.items()
             if (el := r.one(found, tag)) is not None}
    if parts:
        dom = replace(dom, **parts)
    if (f_el := r.one(found, "features")) is not None:
        check_features(r, f_el, dom.features, dom.type is DomainType.KVM)
    if devices_el is not None:
        dom = replace(dom, devices=parse_devices(r, devices_el, os_))
    return dom

def _name(r: Reader, el: etree._Element) -> str:
    value = r.text(el)
    if len(value) > MAX_NAME or not NAME_RE.match(value):
        raise r.fail(
            E.INVALID_NAME, el,
            f"domain name {short(value)} is not a safe file name: use 1-{MAX_NAME} of "
            "A-Z a-z 0-9 _ . + - and do not start with '.', '+' or '-'",
            "rename the domain, e.g. <name>web-1</name>",
        )
    return value

def _uuid(r: Reader, el: etree._Element) -> str:
    value = r.text(el)
    if not UUID_RE.match(value):
        raise r.fail(
            E.INVALID_UUID, el, f"malformed uuid element: {short(value)}",
            "write 32 hex digits, e.g. 4dea22b3-1d52-d8f3-2516-782e98ab3fa0, or remove "
            "<uuid> to have one generated",
        )
    return str(uuidlib.UUID(hex=value))

def _memory(r: Reader, el: etree._Element) -> int:
    r.shape(el, ("unit",), text=True)
    unit = el.get("unit", "KiB")
    mult = UNIT_BYTES.get(unit.lower())
    if mult is None:
        raise r.fail(
            E.INVALID_MEMORY, el, f"unknown unit '{clip(unit)}' in <{el.tag}>",
            "use one of b, KiB, MiB, GiB, TiB, k, M, G, T, KB, MB, GB, TB", attr="unit",
        )
    raw = el.text or ""  # digits only, as libvirt's schema wants them
    if not UINT_RE.match(raw):
        raise r.fail(
            E.INVALID_MEMORY, el, f"malformed size {clip(raw)!r} in <{el.tag}>",
            f"write a whole number, e.g. <{el.tag} unit='MiB'>512</{el.tag}>",
        )
    value = (int(raw) if len(raw) <= 30 else MAX_MEMORY_KIB + 1) * mult
    kib = -(-value // 1024)  # libvirt rounds up to whole KiB
    if kib == 0:
        raise r.fail(
            E.INVALID_MEMORY, el, f"<{el.tag}> must be larger than zero",
            f"write a size, e.g. <{el.tag} unit='MiB'>512</{el.tag}>",
        )
    if kib > MAX_MEMORY_KIB:
        raise r.fail(
            E.INVALID_MEMORY, el, f"<{el.tag}> is too large", "write a realistic size"
        )
    return kib

def _os(r: Reader, el: etree._Element) -> Os:
    found = r.shape(
        el, (), ("type", "kernel", "initrd", "cmdline", "boot"), multi=("boot",)
    )
    type_el = r.need(found, "type", el)
    os_type = r.text(type_el, strip=True, attrs=("arch", "machine"))
    if os_type != "hvm":
        raise r.fail(
            E.INVALID_VALUE, type_el, f"Invalid value for element 'type': '{clip(os_type)}'.",
            "tapvirt runs full virtual machines: write <type>hvm</type>",
        )
    arch = type_el.get("arch")
    if arch is not None and arch not in ARCHES:
        raise r.fail(
            E.INVALID_VALUE, type_el,
            f"Invalid value for attribute 'arch' in element 'type': '{clip(arch)}'.",
            f"use one of: {', '.join(ARCHES)}", attr="arch",
        )
    machine = type_el.get("machine")
    if machine is not None and not MACHINE_RE.match(machine):
        raise r.fail(
            E.INVALID_VALUE, type_el,
            f"Invalid value for attribute 'machine' in element 'type': '{clip(machine)}'.",
            "use a QEMU machine type such as pc, q35 or pc-i440fx-7.2", attr="machine",
        )
    paths: dict[str, str] = {}
    for tag in ("kernel", "initrd"):
        if (p := r.one(found, tag)) is not None:
            paths[tag] = r.abspath(p, None, r.text(p))
    cmdline = None
    if (c := r.one(found, "cmdline")) is not None:
        r.shape(c, text=True)
        cmdline = c.text or ""
        if "\n" in cmdline:
            raise r.fail(
                E.INVALID_VALUE, c, "the kernel command line must be one line",
                "join the arguments with spaces",
            )
    boots: list[BootDev] = []
    for b in found.get("boot", []):
        r.shape(b, ("dev",), required_attrs=("dev",))
        dev = r.enum(b, "dev", BootDev)
        if dev in boots:
            raise r.fail(
                E.DUPLICATE_ELEMENT, b, f"boot device '{dev}' is listed twice",
                "list each boot device once",
            )
        boots.append(dev)
    return Os(
        type="hvm", arch=arch, machine=machine, kernel=paths.get("kernel"),
        initrd=paths.get("initrd"), cmdline=cmdline, boot=tuple(boots),
    )
