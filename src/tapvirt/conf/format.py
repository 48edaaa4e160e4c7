"""`Domain` -> canonical libvirt XML, in the element and attribute order of libvirt's
`virsh dumpxml`, indented by two spaces, attributes in single quotes.

`format_domain(parse_domain(x))` is a fixed point, and `parse_domain(format_domain(d))`
gives `d` back for every valid model. The persistent form (the default) follows libvirt's
inactive XML: `managed=` only when it was given, managed devices with a generated name
hidden, aliases only when the user chose them (`ua-...`). The live form adds the aliases
of all devices and the actual device names of the running guest.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from tapvirt.conf.model import (
    Chardev,
    ChardevKind,
    ChardevType,
    DirectSource,
    Disk,
    Domain,
    Interface,
)
from tapvirt.conf.rules import RESERVED_PREFIXES

__all__ = ["format_domain"]

_IND = "  "
_Writer = Callable[[str], None]  # the `append` of the output lines


def format_domain(
    dom: Domain,
    *,
    live: bool = False,
    actual_devs: Mapping[str, str] | None = None,
    domain_id: int | None = None,
) -> str:
    """The canonical XML of `dom` (ends with a newline).

    live: the running guest's form: every device's `<alias>`, and for each interface whose
        alias is in `actual_devs` the device it really uses (`<target dev=...>`), as in
        libvirt's `dumpxml` of a running domain. `domain_id` adds `id=` to `<domain>`.
    """
    actual = dict(actual_devs or {})
    out: list[str] = []
    w = out.append
    head = f"<domain type={_a(dom.type)}"
    if live and domain_id is not None:
        head += f" id={_a(str(domain_id))}"
    w(head + ">")
    w(f"{_IND}<name>{_t(dom.name)}</name>")
    w(f"{_IND}<uuid>{dom.uuid}</uuid>")
    if dom.title is not None:
        w(f"{_IND}<title>{_t(dom.title)}</title>")
    if dom.description is not None:
        w(f"{_IND}<description>{_t(dom.description)}</description>")
    w(f"{_IND}<memory unit='KiB'>{dom.memory_kib}</memory>")
    if dom.current_memory_kib is not None:
        w(f"{_IND}<currentMemory unit='KiB'>{dom.current_memory_kib}</currentMemory>")
    w(f"{_IND}<vcpu placement='static'>{dom.vcpus}</vcpu>")
    _os(dom, w)
    if dom.features.acpi:
        w(f"{_IND}<features>")
        w(f"{_IND * 2}<acpi/>")
        w(f"{_IND}</features>")
    w(f"{_IND}<on_poweroff>{dom.on_poweroff}</on_poweroff>")
    w(f"{_IND}<on_reboot>{dom.on_reboot}</on_reboot>")
    w(f"{_IND}<on_crash>{dom.on_crash}</on_crash>")
    d = dom.devices
    if d.emulator is None and not (d.disks or d.interfaces or d.serials or d.consoles):
        w(f"{_IND}<devices/>")
    else:
        w(f"{_IND}<devices>")
        if d.emulator is not None:
            w(f"{_IND * 2}<emulator>{_t(d.emulator)}</emulator>")
        for disk in d.disks:
            _disk(disk, w, live)
        for iface in d.interfaces:
            _interface(iface, w, live, actual)
        for chardev in (*d.serials, *d.consoles):
            _chardev(chardev, w)
        w(f"{_IND}</devices>")
    w("</domain>")
    return "\n".join(out) + "\n"


def _os(dom: Domain, w: _Writer) -> None:
    o = dom.os
    i2 = _IND * 2
    w(f"{_IND}<os>")
    attrs = _attrs(arch=o.arch, machine=o.machine)
    w(f"{i2}<type{attrs}>{_t(o.type)}</type>")
    if o.kernel is not None:
        w(f"{i2}<kernel>{_t(o.kernel)}</kernel>")
    if o.initrd is not None:
        w(f"{i2}<initrd>{_t(o.initrd)}</initrd>")
    if o.cmdline is not None:
        w(f"{i2}<cmdline>{_t(o.cmdline)}</cmdline>" if o.cmdline else f"{i2}<cmdline/>")
    for b in o.boot:
        w(f"{i2}<boot dev={_a(b)}/>")
    w(f"{_IND}</os>")


def _disk(disk: Disk, w: _Writer, live: bool) -> None:
    i2, i3 = _IND * 2, _IND * 3
    w(f"{i2}<disk type='file' device={_a(disk.device)}>")
    w(f"{i3}<driver name='qemu' type={_a(disk.format)}/>")
    w(f"{i3}<source file={_a(disk.source_file)}/>")
    w(f"{i3}<target dev={_a(disk.target_dev)} bus={_a(disk.target_bus)}/>")
    if disk.readonly:
        w(f"{i3}<readonly/>")
    if disk.boot_order is not None:
        w(f"{i3}<boot order='{disk.boot_order}'/>")
    _alias(disk.alias, w, live)
    w(f"{i2}</disk>")


def _interface(iface: Interface, w: _Writer, live: bool, actual: Mapping[str, str]) -> None:
    i2, i3 = _IND * 2, _IND * 3
    w(f"{i2}<interface type={_a(iface.type)}>")
    w(f"{i3}<mac address={_a(iface.mac)}/>")
    src = iface.source
    if isinstance(src, DirectSource):
        w(f"{i3}<source dev={_a(src.dev)} mode={_a(src.mode)}/>")
    elif src is not None:
        w(f"{i3}<source bridge={_a(src.bridge)}/>")
    if iface.script is not None:
        w(f"{i3}<script path={_a(iface.script)}/>")
    _target(iface, w, live, actual)
    if iface.model_given:
        w(f"{i3}<model type={_a(iface.model)}/>")
    if iface.driver is not None and (iface.driver.name or iface.driver.queues is not None):
        attrs = _attrs(
            name=iface.driver.name,
            queues=None if iface.driver.queues is None else str(iface.driver.queues),
        )
        w(f"{i3}<driver{attrs}/>")
    if iface.backend_tap is not None:
        w(f"{i3}<backend tap={_a(iface.backend_tap)}/>")
    if iface.link_state is not None:
        w(f"{i3}<link state={_a(iface.link_state)}/>")
    if iface.mtu is not None:
        w(f"{i3}<mtu size='{iface.mtu}'/>")
    if iface.boot_order is not None:
        w(f"{i3}<boot order='{iface.boot_order}'/>")
    _alias(iface.alias, w, live)
    w(f"{i2}</interface>")


def _target(iface: Interface, w: _Writer, live: bool, actual: Mapping[str, str]) -> None:
    t = iface.target
    dev = t.dev if t is not None else None
    managed = t.managed if t is not None else None
    if live and iface.alias is not None and iface.alias in actual and not iface.unmanaged:
        dev = actual[iface.alias]
    elif not live and dev is not None and managed is not False and dev.startswith(
        RESERVED_PREFIXES
    ):
        dev = None  # libvirt hides generated names in the persistent XML
    if dev is None:
        return  # <target> without dev is invalid for libvirt's schema
    attrs = _attrs(dev=dev, managed=None if managed is None else ("yes" if managed else "no"))
    w(f"{_IND * 3}<target{attrs}/>")


def _chardev(c: Chardev, w: _Writer) -> None:
    i2, i3 = _IND * 2, _IND * 3
    w(f"{i2}<{c.kind} type={_a(c.type)}>")
    if c.type is ChardevType.UNIX and c.path is not None:
        mode = "bind" if c.unix_listen else "connect"
        w(f"{i3}<source mode='{mode}' path={_a(c.path)}/>")
    elif c.type is ChardevType.FILE and c.path is not None:
        w(f"{i3}<source path={_a(c.path)}/>")
    if c.kind is ChardevKind.CONSOLE:
        w(f"{i3}<target type='serial' port='{c.port}'/>")
    else:
        w(f"{i3}<target port='{c.port}'/>")
    w(f"{i2}</{c.kind}>")


def _alias(alias: str | None, w: _Writer, live: bool) -> None:
    if alias is not None and (live or alias.startswith("ua-")):
        w(f"{_IND * 3}<alias name={_a(alias)}/>")


# --- escaping -------------------------------------------------------------------------

_TEXT = str.maketrans({"&": "&amp;", "<": "&lt;", ">": "&gt;", "\r": "&#13;"})
_ATTR = str.maketrans({
    "&": "&amp;", "<": "&lt;", ">": "&gt;", "'": "&apos;", "\n": "&#10;", "\r": "&#13;",
    "\t": "&#9;",
})


def _t(text: str) -> str:
    return text.translate(_TEXT)


def _a(value: str) -> str:
    return "'" + str(value).translate(_ATTR) + "'"


def _attrs(**values: str | None) -> str:
    return "".join(f" {k}={_a(v)}" for k, v in values.items() if v is not None)
