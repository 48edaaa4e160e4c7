"""`<domain>` itself: name, uuid, memory, vcpu, os, lifecycle actions; the other children
are parsed by their modules (`ELEMENTS`), `<devices>` by `tapvirt.conf.devices`.

`parse_domain_element` walks the root element and hands `<devices>` to
`tapvirt.conf.devices`. Errors name the element, its line, libvirt's message, the fix.
"""

from __future__ import annotations

import re
import uuid as uuidlib
from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from tapvirt.conf import errors as E
from tapvirt.conf.devices import parse_devices
from tapvirt.conf.devices.iommu import check_iommu
from tapvirt.conf.devices.refused import refuse_unprivileged
from tapvirt.conf.domain.clock import parse_clock
from tapvirt.conf.domain.cpu import check_cpu, parse_cpu
from tapvirt.conf.domain.features import IoapicDriver, check_features, parse_features
from tapvirt.conf.domain.idmap import parse_idmap
from tapvirt.conf.domain.memhotplug import check_hotplug, parse_max_memory, parse_size
from tapvirt.conf.domain.memorybacking import parse_memory_backing
from tapvirt.conf.domain.metadata import parse_metadata
from tapvirt.conf.domain.numa import check_numa
from tapvirt.conf.domain.osboot import TAGS as OS_BOOT_TAGS
from tapvirt.conf.domain.osboot import Firmware, SmbiosMode, parse_osboot
from tapvirt.conf.domain.pm import parse_pm
from tapvirt.conf.domain.resource import parse_resource
from tapvirt.conf.domain.seclabel import parse_seclabel
from tapvirt.conf.domain.sysinfo import check_sysinfo, parse_sysinfo
from tapvirt.conf.domain.tuning import (
    check_numatune,
    parse_cputune,
    parse_iothreads,
    parse_numatune,
)
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
    MAX_NAME,
    MAX_VCPUS,
    NAME_RE,
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
    "cpu": ("cpu", parse_cpu),
    "memoryBacking": ("memory_backing", parse_memory_backing),
    "iothreads": ("iothreads", parse_iothreads),
    "cputune": ("cputune", parse_cputune),
    "resource": ("resource", parse_resource),
    "sysinfo": ("sysinfo", parse_sysinfo),
    "idmap": ("idmap", parse_idmap),
}
# libvirt's virBitmapParse syntax for cpuset lists
_CPUSET = re.compile(r"\^?[0-9]{1,5}(?:-[0-9]{1,5})?(?:,\^?[0-9]{1,5}(?:-[0-9]{1,5})?)*\Z")


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
        root, ("type", "id"),
        ("name", "uuid", "title", "description", "maxMemory", "memory", "currentMemory",
         "vcpu", "os", "on_poweroff", "on_reboot", "on_crash", "devices", "seclabel",
         "numatune", *ELEMENTS),
        multi=("seclabel",),
        required_attrs=("type",),
    )
    dtype = r.enum(root, "type", DomainType)
    ignored_id = None
    if (raw_id := root.get("id")) is not None:  # libvirt ignores it in a definition
        if not re.fullmatch(r"-?[0-9]{1,10}", raw_id):
            raise r.fail(E.INVALID_VALUE, root, f"Invalid value for attribute 'id' in "
                         f"element 'domain': '{clip(raw_id)}'.", "remove id= (it is ignored)",
                         attr="id")
        ignored_id = int(raw_id)
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
    cpu_el = r.one(found, "cpu")
    has_numa = cpu_el is not None and cpu_el.find("numa") is not None
    # with guest NUMA cells <memory> may be left out: it is their sum (libvirt's rule)
    mem_el = r.one(found, "memory") if has_numa else r.need(found, "memory", root)
    memory = _memory(r, mem_el) if mem_el is not None else 0
    current_mem = None
    if (c := r.one(found, "currentMemory")) is not None:
        current_mem = _memory(r, c)
        if current_mem > memory and not has_numa:
            raise r.fail(
                E.INVALID_MEMORY, c,
                f"currentMemory ({current_mem} KiB) is larger than memory ({memory} KiB)",
                "make <currentMemory> at most <memory> (libvirt would silently clamp it)",
            )
    vcpus, current, cpuset, vcpu_auto = 1, None, None, False
    if (v := r.one(found, "vcpu")) is not None:
        r.shape(v, ("placement", "cpuset", "current"), text=True)
        placement = v.get("placement")
        vcpu_auto = placement == "auto"
        if vcpu_auto and v.get("cpuset") is not None:
            raise r.fail(
                E.INVALID_VALUE, v, "cpuset= has no meaning with placement='auto' (numad "
                "chooses the CPUs; libvirt drops the cpuset silently)",
                "remove cpuset=, or write placement='static'", attr="cpuset",
            )
        if placement not in (None, "static", "auto"):
            raise r.fail(
                E.INVALID_VALUE, v,
                f"Invalid value for attribute 'placement' in element 'vcpu': "
                f"'{clip(placement)}'.", "use placement='static' or leave it out",
                attr="placement",
            )
        vcpus = r.uint(v, None, 1, MAX_VCPUS)
        if v.get("current") is not None:
            current = r.uint(v, "current", 1, MAX_VCPUS)
            if current > vcpus:
                raise r.fail(
                    E.INVALID_VALUE, v,
                    f"maxvcpus must not be less than current vcpus ({vcpus} < {current})",
                    f"make current at most {vcpus}", attr="current",
                )
            if current == vcpus:
                current = None  # libvirt does not write current='N' when all are online
        if (raw := v.get("cpuset")) is not None:
            if not _CPUSET.match(raw) or len(raw) > 1024:
                raise r.fail(
                    E.INVALID_VALUE, v, f"Invalid value of 'cpuset': '{clip(raw)}'",
                    "list host CPUs like '0-3,6' (a '^' excludes: '0-7,^3')", attr="cpuset",
                )
            cpuset = raw
    os_ = _os(r, r.need(found, "os", root))
    actions: dict[str, LifecycleAction] = {}
    for tag in ("on_poweroff", "on_reboot", "on_crash"):
        if (el := r.one(found, tag)) is not None:
            text = r.text(el, strip=True)
            if tag == "on_crash" and text in ("coredump-destroy", "coredump-restart"):
                raise r.fail(
                    E.CRASH_ACTION_UNSUPPORTED, el,
                    f"<on_crash>{text}: libvirt writes a core dump of the panicked guest "
                    "itself; tapvirt does not write dumps",
                    "use <on_crash>preserve</on_crash> (the guest stays crashed) and dump it "
                    "with qemu-monitor-command NAME '{\"execute\":\"dump-guest-memory\",...}', "
                    f"or <on_crash>{text.removeprefix('coredump-')}</on_crash> without a dump",
                )
            actions[tag] = r.enum(el, "", LifecycleAction, text=text)
    devices_el = r.one(found, "devices")
    dom = Domain(
        name=name, uuid=uuid, type=dtype, title=title, description=description,
        memory_kib=memory, current_memory_kib=current_mem, vcpus=vcpus,
        vcpus_current=current, vcpu_cpuset=cpuset, os=os_, ignored_id=ignored_id,
        **actions,  # type: ignore[arg-type]
    )
    parts = {field: parse(r, el) for tag, (field, parse) in ELEMENTS.items()
             if (el := r.one(found, tag)) is not None}
    if parts:
        dom = replace(dom, **parts)
    numatune = parse_numatune(r, r.one(found, "numatune"), vcpu_auto)
    if numatune is not None:
        dom = replace(dom, numatune=numatune)
    ct = dom.cputune
    # libvirt: automatic memory placement without any pinning makes the vCPUs' automatic
    dom = replace(dom, vcpu_placement_auto=vcpu_auto or (
        numatune is not None and numatune.auto and cpuset is None
        and (ct is None or (not ct.vcpupins and ct.emulatorpin is None))))
    kvm = dom.type is DomainType.KVM
    if (f_el := r.one(found, "features")) is not None:
        check_features(r, f_el, dom.features, kvm)
    seclabels = tuple(parse_seclabel(r, el) for el in found.get("seclabel", []))
    if len(seclabels) > 1:
        raise r.fail(E.MISSING_ATTRIBUTE, found["seclabel"][1],
                     "missing security model when using multiple labels",
                     "keep one <seclabel> (tapvirt accepts only labels without a model)")
    if seclabels:
        dom = replace(dom, seclabels=seclabels)
    if dom.sysinfo is not None and (s_el := r.one(found, "sysinfo")) is not None:
        dom = replace(dom, uuid=check_sysinfo(r, s_el, dom.sysinfo, dom.uuid))
    if dom.cpu is not None and (c_el := r.one(found, "cpu")) is not None:
        check_cpu(r, c_el, dom.cpu, kvm=kvm, vcpus=dom.vcpus)
        if dom.cpu.numa is not None:
            n_el = c_el.find("numa")
            assert n_el is not None
            check_numa(r, n_el, dom.cpu.numa, dom.vcpus)
            total = dom.cpu.numa.memory_kib
            cur = dom.current_memory_kib
            # libvirt: <memory> is the cells' sum, currentMemory at most that
            dom = replace(dom, memory_kib=total,
                          current_memory_kib=None if cur is None else min(cur, total))
    if dom.numatune is not None and (nt_el := r.one(found, "numatune")) is not None:
        cells = len(dom.cpu.numa.cells) if dom.cpu is not None and dom.cpu.numa else 0
        check_numatune(r, nt_el, dom.numatune, cells)
    if devices_el is not None:
        dom = replace(dom, devices=parse_devices(r, devices_el, os_))
        if dom.devices.iommu is not None and (io_el := devices_el.find("iommu")) is not None:
            check_iommu(r, io_el, dom.devices.iommu, q35="q35" in (os_.machine or ""),
                        acpi=bool(dom.features.acpi),
                        split_irqchip=dom.features.ioapic is IoapicDriver.QEMU, kvm=kvm)
    if dom.vcpus > MAX_VCPUS_WITHOUT_EIM:
        _many_vcpus(r, r.need(found, "vcpu", root), dom, kvm)
    dom = _hotplug(r, found, dom)
    _check_boot(r, r.need(found, "os", root), dom)
    return dom

MAX_VCPUS_WITHOUT_EIM = 255  # libvirt's QEMU_MAX_VCPUS_WITHOUT_EIM (x86 APIC ids)


def _many_vcpus(r: Reader, v_el: etree._Element, dom: Domain, kvm: bool) -> None:
    """More than 255 x86 vCPUs: libvirt's rule (q35 and an IOMMU with eim), and QEMU's
    under TCG, which has no x2APIC API ("current -smp configuration requires kernel
    irqchip and X2APIC API support")."""
    if not kvm:
        raise r.fail(
            E.UNSUPPORTED_VALUE, v_el,
            f"{dom.vcpus} vCPUs: more than {MAX_VCPUS_WITHOUT_EIM} x86 vCPUs need KVM's "
            "x2APIC support; QEMU refuses them under TCG",
            f"use at most {MAX_VCPUS_WITHOUT_EIM} vCPUs for <domain type='qemu'>, or "
            "<domain type='kvm'>",
        )
    if "q35" not in (dom.os.machine or ""):
        raise r.fail(
            E.UNSUPPORTED_VALUE, v_el,
            f"more than {MAX_VCPUS_WITHOUT_EIM} vCPUs are only supported on q35-based "
            "machine types", "use <type machine='q35'>hvm</type>",
        )
    if dom.devices.iommu is None or not dom.devices.iommu.eim:
        raise r.fail(
            E.UNSUPPORTED_VALUE, v_el,
            f"more than {MAX_VCPUS_WITHOUT_EIM} vCPUs require extended interrupt mode "
            "enabled on the iommu device",
            "add <iommu model='intel'><driver intremap='on' eim='on'/></iommu> (with "
            "<ioapic driver='qemu'/>)",
        )


def _hotplug(r: Reader, found: dict[str, list[etree._Element]], dom: Domain) -> Domain:
    """<maxMemory> and the memory devices (conf.domain.memhotplug): with NUMA cells the
    <memory> is their sum plus the devices' sizes (libvirt's define-time rule)."""
    max_el = r.one(found, "maxMemory")
    mm = parse_max_memory(r, max_el) if max_el is not None else None
    mems = dom.devices.memories
    dev_el = r.one(found, "devices")
    mem_els = dev_el.findall("memory") if dev_el is not None else []
    numa = dom.cpu.numa if dom.cpu is not None else None
    initial = numa.memory_kib if numa is not None else dom.memory_kib
    emulator = dom.devices.emulator or ""
    x86_64 = (emulator.endswith("x86_64") if emulator
              else dom.os.arch in (None, "x86_64"))
    cpu = dom.cpu
    # under KVM these take the host's physical address bits; every other x86_64 CPU 40
    host_cpu = cpu is not None and cpu.mode.value in ("host-passthrough", "maximum")
    model = cpu.model.name if cpu is not None and cpu.model is not None else None
    check_hotplug(
        r, max_el, mm, memory_kib=initial, cells=len(numa.cells) if numa is not None else 0,
        devices=mems, device_els=mem_els,
        phys_bits_40=x86_64 and not (dom.type is DomainType.KVM and host_cpu),
        acpi=bool(dom.features.acpi), machine=dom.os.machine, cpu_model=model,
    )
    if mm is None:
        return dom
    total = initial + sum(m.size_kib for m in mems) if numa is not None else dom.memory_kib
    cur = dom.current_memory_kib
    return replace(dom, max_memory=mm, memory_kib=total,
                   current_memory_kib=None if cur is None else min(cur, total))


def _check_boot(r: Reader, os_el: etree._Element, dom: Domain) -> None:
    ob = dom.os.boot_options
    if ob.smbios is SmbiosMode.SYSINFO and dom.sysinfo is None:
        raise r.fail(
            E.MISSING_ELEMENT, os_el, f"Domain '{dom.name}' sysinfo are not available",
            "add a <sysinfo type='smbios'> block, or remove <smbios mode='sysinfo'/>",
        )
    if ob.bios is not None and ob.bios.useserial and not dom.devices.serials:
        where = os_el.find("bios")
        raise r.fail(E.MISSING_ELEMENT, where if where is not None else os_el,
                     "need at least one serial port to use BIOS serial output",
                     "add <serial type='pty'/> to <devices>, or remove useserial='yes'")
    if ob.loader is not None and ob.loader.secure and dom.os.firmware is None:
        # with firmware='efi' the chosen firmware's requires-smm turns SMM on (qemu.fwdesc)
        where = os_el.find("loader")
        assert where is not None
        if "q35" not in (dom.os.machine or ""):
            raise r.fail(E.UNSUPPORTED_VALUE, where,
                         "Secure boot is supported with q35 machine types only",
                         "use <type machine='q35'>hvm</type>, or secure='no'", attr="secure")
        if dom.features.smm is not True:
            raise r.fail(E.UNSUPPORTED_VALUE, where,
                         "Secure boot requires SMM feature enabled",
                         "add <smm state='on'/> to <features>", attr="secure")


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
    return parse_size(r, el)


def _os(r: Reader, el: etree._Element) -> Os:
    found = r.shape(
        el, ("firmware",), ("type", "kernel", "initrd", "cmdline", "boot", *OS_BOOT_TAGS),
        multi=("boot",),
    )
    firmware = r.enum(el, "firmware", Firmware) if el.get("firmware") is not None else None
    boot_options = parse_osboot(r, el, found, firmware)
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
        firmware=None if firmware is None else firmware.value, boot_options=boot_options,
    )
