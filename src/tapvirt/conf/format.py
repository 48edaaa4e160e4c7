"""`Domain` -> canonical libvirt XML, in the element and attribute order of libvirt's
`virsh dumpxml`, indented by two spaces, attributes in single quotes.

`format_domain(parse_domain(x))` is a fixed point, and `parse_domain(format_domain(d))`
gives `d` back for every valid model. The persistent form (the default) follows libvirt's
inactive XML: `managed=` only when it was given, managed devices with a generated name
hidden, aliases only when the user chose them (`ua-...`). The live form adds the aliases
of all devices and the actual device names of the running guest.

The `<domain>` level is written here; each device family formats its own elements
(`tapvirt.conf.devices`). Escaping is done once, in `tapvirt.conf.xmlout`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from tapvirt.conf.devices import format_devices
from tapvirt.conf.domain.clock import format_clock
from tapvirt.conf.domain.cpu import format_cpu
from tapvirt.conf.domain.features import format_features
from tapvirt.conf.domain.idmap import format_idmap
from tapvirt.conf.domain.memorybacking import format_memory_backing
from tapvirt.conf.domain.metadata import format_metadata
from tapvirt.conf.domain.osboot import write_boot_options, write_firmware
from tapvirt.conf.domain.pm import format_pm
from tapvirt.conf.domain.resource import format_resource
from tapvirt.conf.domain.seclabel import format_seclabel
from tapvirt.conf.domain.sysinfo import format_sysinfo
from tapvirt.conf.domain.tuning import format_cputune, format_iothreads, format_numatune
from tapvirt.conf.xmlout import IND as _IND
from tapvirt.conf.xmlout import Writer as _Writer
from tapvirt.conf.xmlout import a as _a
from tapvirt.conf.xmlout import attrs as _attrs
from tapvirt.conf.xmlout import t as _t

if TYPE_CHECKING:
    from tapvirt.conf.model import Domain

__all__ = ["format_domain"]


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
    if dom.metadata is not None:
        format_metadata(dom.metadata, w)
    if dom.max_memory is not None:
        w(f"{_IND}<maxMemory slots='{dom.max_memory.slots}' unit='KiB'>"
          f"{dom.max_memory.kib}</maxMemory>")
    w(f"{_IND}<memory unit='KiB'>{dom.memory_kib}</memory>")
    if dom.current_memory_kib is not None:
        w(f"{_IND}<currentMemory unit='KiB'>{dom.current_memory_kib}</currentMemory>")
    if dom.memory_backing is not None:
        format_memory_backing(dom.memory_backing, w)
    vcpu_attrs = _attrs(
        placement="auto" if dom.vcpu_placement_auto else "static", cpuset=dom.vcpu_cpuset,
        current=None if dom.vcpus_current is None else str(dom.vcpus_current),
    )
    w(f"{_IND}<vcpu{vcpu_attrs}>{dom.vcpus}</vcpu>")
    if dom.iothreads is not None:
        format_iothreads(dom.iothreads, w)
    if dom.cputune is not None:
        format_cputune(dom.cputune, w)
    if dom.numatune is not None:
        format_numatune(dom.numatune, w)
    if dom.resource is not None:
        format_resource(dom.resource, w)
    if dom.sysinfo is not None:
        format_sysinfo(dom.sysinfo, w)
    _os(dom, w)
    if dom.idmap is not None:
        format_idmap(dom.idmap, w)
    format_features(dom.features, w)
    if dom.cpu is not None:
        format_cpu(dom.cpu, w)
    if dom.clock is not None:
        format_clock(dom.clock, w)
    w(f"{_IND}<on_poweroff>{dom.on_poweroff}</on_poweroff>")
    w(f"{_IND}<on_reboot>{dom.on_reboot}</on_reboot>")
    w(f"{_IND}<on_crash>{dom.on_crash}</on_crash>")
    if dom.pm is not None:
        format_pm(dom.pm, w)
    format_devices(dom.devices, w, live, actual)
    for sl in dom.seclabels:
        format_seclabel(sl, w)
    w("</domain>")
    return "\n".join(out) + "\n"


def _os(dom: Domain, w: _Writer) -> None:
    o = dom.os
    i2 = _IND * 2
    w(f"{_IND}<os{_attrs(firmware=o.firmware)}>")
    attrs = _attrs(arch=o.arch, machine=o.machine)
    w(f"{i2}<type{attrs}>{_t(o.type)}</type>")
    write_firmware(o.boot_options, w, 2)
    if o.kernel is not None:
        w(f"{i2}<kernel>{_t(o.kernel)}</kernel>")
    if o.initrd is not None:
        w(f"{i2}<initrd>{_t(o.initrd)}</initrd>")
    if o.cmdline is not None:
        w(f"{i2}<cmdline>{_t(o.cmdline)}</cmdline>" if o.cmdline else f"{i2}<cmdline/>")
    for b in o.boot:
        w(f"{i2}<boot dev={_a(b)}/>")
    write_boot_options(o.boot_options, w, 2)
    w(f"{_IND}</os>")
