"""attach-device, detach-device, update-device, attach-interface, detach-interface.

Live changes run the same checks as `start` (`tapvirt.qemu.connect`), open the fds, and
hand the supervisor the QMP steps (`tapvirt.qemu.argv.hotplug`) together with the new live
state (interfaces, live XML, devices to delete at stop); it records that only if every
step succeeded. On any failure the fds are closed, what QEMU got is removed again
(netdev_del, blockdev-del, closefd) and devices tapvirt created are deleted; a
precreated device is never changed. `--config` changes the stored definition (through
the store, like `define`). Without --live/--config the change affects the current
state: live while the guest runs, else the definition (virsh's --current).
"""

from __future__ import annotations

import dataclasses
import os
import re
import stat
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from tapvirt.domains import api, live
from tapvirt.domains.errors import DOMAIN_NOT_RUNNING
from tapvirt.domains.live_errors import (
    DEVICE_AMBIGUOUS,
    DEVICE_DUPLICATE,
    DEVICE_FILE_INVALID,
    DEVICE_NOT_FOUND,
    HOTPLUG_FAILED,
    HOTPLUG_NEEDS_PRIVILEGE,
    HOTPLUG_UNSUPPORTED,
    NO_PCI_SLOT,
)
from tapvirt.domains.runtime import PAUSED, RUNNING, DomainDir, IfaceState
from tapvirt.errors import FILE_UNREADABLE, TapvirtError

if TYPE_CHECKING:
    from tapvirt.conf.devices.memory import MemoryDevice
    from tapvirt.conf.model import Disk, Domain, Interface
    from tapvirt.host.api import Host

MAX_DEVICE_XML = 1 << 20


@dataclass(frozen=True)
class Affect:
    live: bool
    config: bool


@dataclass
class Outcome:
    """What a hotplug verb did, for the CLI's message and --json."""

    kind: str  # interface / disk / memory
    alias: str | None
    mac: str | None = None
    device: str | None = None  # host device or disk target
    live: bool = False
    config: bool = False
    warnings: list[dict[str, Any]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def affect(name: str, *, live_: bool = False, config: bool = False,
           persistent: bool = False, current: bool = False) -> Affect:
    """virsh's flags: --live, --config, --persistent (= both), --current (default)."""
    st = api.state_of(name)
    running = st.state in (RUNNING, PAUSED)
    if current and (live_ or config or persistent):
        raise TapvirtError(HOTPLUG_UNSUPPORTED, f"domain {name}",
                           "--current cannot be combined with --live, --config or --persistent",
                           "give one of them")
    if persistent:
        live_, config = running, True
    if not live_ and not config:
        live_, config = running, not running
    if live_ and not running:
        raise TapvirtError(DOMAIN_NOT_RUNNING, f"domain {name}", "it is not running",
                           f"start it, or change the definition: --config ({st.state})")
    if config and not api._store().exists(name):
        raise TapvirtError(DOMAIN_NOT_RUNNING, f"domain {name}",
                           "it is transient: there is no stored definition to change",
                           "leave out --config/--persistent, or define it first")
    return Affect(live_, config)


# -- reading the device XML ------------------------------------------------------------------

@dataclass(frozen=True)
class DeviceXml:
    text: str
    source: str
    tag: str  # interface / disk
    given: frozenset[str]  # child elements present (mac, alias, target, ...)


def read_device_file(path: str) -> DeviceXml:
    try:
        with open(path, "rb") as f:
            if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
                raise TapvirtError(FILE_UNREADABLE, path, "is not a regular file",
                                   "name an XML file")
            data = f.read(MAX_DEVICE_XML + 1)
    except OSError as exc:
        raise TapvirtError(FILE_UNREADABLE, path, f"cannot read the file: {exc.strerror}",
                           "check the path and its permissions") from None
    if len(data) > MAX_DEVICE_XML:
        raise TapvirtError(DEVICE_FILE_INVALID, path, "is larger than 1 MiB",
                           "a device is one small element")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise TapvirtError(DEVICE_FILE_INVALID, path, "is not UTF-8 text",
                           "save it as UTF-8") from None
    return device_xml(text, path)


def device_xml(text: str, source: str = "<string>") -> DeviceXml:
    from tapvirt.conf.xml import load as _load

    root = _load(text, source)  # the same safe parser as for domains (no DTD, no entities)
    if root.tag not in ("interface", "disk", "memory"):
        raise TapvirtError(DEVICE_FILE_INVALID, source,
                           f"<{str(root.tag)[:40]}> is not a device tapvirt can attach",
                           "write one <interface>, <disk> or <memory> element")
    given = frozenset(str(c.tag) for c in root if isinstance(c.tag, str))
    return DeviceXml(text, source, str(root.tag), given)


def _parse_device(dev: DeviceXml, dom: Domain) -> Interface | Disk:
    """The device as tapvirt's model, validated by the domain parser itself: the element
    is placed into a minimal domain of the same type and machine (on the element's own
    first line, so error line numbers are the file's)."""
    from tapvirt.conf.parse import parse_domain

    body = re.sub(r"^\s*<\?xml[^>]*\?>", "", dev.text, count=1)
    os_attrs = "".join(f" {k}='{v}'" for k, v in (("arch", dom.os.arch),
                                                  ("machine", dom.os.machine)) if v)
    doc = (f"<domain type='{dom.type.value}'><name>hotplug</name><memory>65536</memory>"
           f"<os><type{os_attrs}>hvm</type></os><devices>{body}</devices></domain>")
    parsed = parse_domain(doc, source=dev.source)
    device: Interface | Disk = (
        parsed.devices.interfaces[0] if dev.tag == "interface" else parsed.devices.disks[0]
    )
    if "<address" not in body:
        # the slot the minimal domain gave it means nothing in the real one: QEMU (live)
        # or the post-parse step of the stored definition (--config) picks the real one
        device = dataclasses.replace(device, address=None)
    return device


def _parse_interface(dev: DeviceXml, dom: Domain) -> Interface:
    from tapvirt.conf.model import Interface

    if dev.tag != "interface":
        raise TapvirtError(DEVICE_FILE_INVALID, dev.source, f"<{dev.tag}> is not an "
                           "<interface>", "write an <interface> element")
    parsed = _parse_device(dev, dom)
    assert isinstance(parsed, Interface)
    return parsed


def _parse_disk(dev: DeviceXml, dom: Domain) -> Disk:
    from tapvirt.conf.model import Disk

    if dev.tag != "disk":
        raise TapvirtError(DEVICE_FILE_INVALID, dev.source, f"<{dev.tag}> is not a <disk>",
                           "write a <disk> element")
    parsed = _parse_device(dev, dom)
    assert isinstance(parsed, Disk)
    return parsed


def _next_alias(aliases: Sequence[str | None], prefix: str = "net") -> str:
    """libvirt's rule: one more than the highest netN in use (never reuse a live one)."""
    rx = re.compile(rf"{re.escape(prefix)}(\d+)$")
    nums = [int(m.group(1)) for a in aliases if a and (m := rx.match(a))]
    return f"{prefix}{max(nums) + 1 if nums else 0}"


# -- interfaces ------------------------------------------------------------------------------

def _check_new_interface(existing: tuple[Interface, ...], iface: Interface, name: str) -> None:
    for other in existing:
        if other.mac == iface.mac:
            raise TapvirtError(DEVICE_DUPLICATE, f"domain {name}",
                               f"it already has an interface with MAC {iface.mac}",
                               "give the new interface another <mac address=...>")
        if iface.dev and other.dev == iface.dev:
            raise TapvirtError(DEVICE_DUPLICATE, f"domain {name}",
                               f"interface {other.alias or other.mac} already uses device "
                               f"{iface.dev}", "one tap cannot serve two NICs: use another")
        if iface.alias and iface.alias.startswith("ua-") and other.alias == iface.alias:
            raise TapvirtError(DEVICE_DUPLICATE, f"domain {name}",
                               f"alias {iface.alias} is taken", "choose another ua- alias")


def _creates_device(iface: Interface) -> bool:
    from tapvirt.conf.model import InterfaceType

    if iface.type is InterfaceType.ETHERNET:
        return not iface.unmanaged
    return iface.type is InterfaceType.DIRECT


def _with_interfaces(dom: Domain, ifaces: tuple[Interface, ...]) -> Domain:
    return dataclasses.replace(dom, devices=dataclasses.replace(dom.devices, interfaces=ifaces))


def _with_disks(dom: Domain, disks: tuple[Disk, ...]) -> Domain:
    return dataclasses.replace(dom, devices=dataclasses.replace(dom.devices, disks=disks))


def _link(iface: Interface) -> str:
    return iface.link_state.value if iface.link_state is not None else "up"


def _hotplug_bus(dd: DomainDir, dom: Domain) -> str | None:
    if "q35" not in (dom.os.machine or ""):
        return None  # pc: QEMU picks a free slot of pci.0 itself
    from tapvirt.qemu.argv.hotplug import free_root_port

    return free_root_port(live.transact(dd, [{"execute": "query-pci"}])[0])


def _plug(dd: DomainDir, dom: Domain, steps: list[dict[str, Any]], commit: dict[str, Any],
          fds: list[int]) -> None:
    """Run an attach; QEMU's "no hotplug here" answers become no-pci-slot with the fix."""
    try:
        live.transact(dd, steps, commit=commit, fds=fds)
    except TapvirtError as err:
        text = err.cause.lower()
        if err.code is not HOTPLUG_FAILED or not ("slot" in text or "hotplug" in text):
            raise
        if "does not support hotplugging" in text and not dom.features.acpi and \
                "q35" not in (dom.os.machine or ""):
            fix = ("PCI hotplug on machine pc needs ACPI: add <features><acpi/></features> to "
                   "the definition and restart the guest")
        elif "does not support hotplugging" in text:
            fix = ("add a spare <controller type='pci' model='pcie-root-port'/> per device to "
                   "the definition and restart the guest")
        else:
            fix = "detach another PCI device first"
        raise TapvirtError(NO_PCI_SLOT, err.subject, err.cause, fix) from None


def _attach_interface_live(name: str, dev: DeviceXml, *, host: Host | None,
                           tun_node: str | None) -> Outcome:
    from tapvirt.qemu.argv import hotplug as hp
    from tapvirt.qemu.connect import connect_domain

    dd, _ = live.supervised(name)
    with live.ops_lock(dd):
        st = dd.read()
        if st.state not in (RUNNING, PAUSED):
            raise TapvirtError(DOMAIN_NOT_RUNNING, f"domain {name}", f"it is {st.state}",
                               f"tapvirt domstate {name}")
        dom = live.live_domain(dd)
        iface = _parse_interface(dev, dom)
        _check_new_interface(dom.devices.interfaces, iface, name)
        if not (iface.alias or "").startswith("ua-"):
            iface = dataclasses.replace(iface, alias=_next_alias(
                [*(i.alias for i in st.interfaces), *(i.alias for i in dom.devices.interfaces)]))
        alias = iface.alias or ""
        if host is None:
            from tapvirt.host.linux import LinuxHost

            host = LinuxHost()
        if _creates_device(iface) and not host.identity().net_admin:
            raise TapvirtError(
                HOTPLUG_NEEDS_PRIVILEGE, f"interface {alias} ({iface.mac})",
                f"a managed {iface.type.value} interface makes tapvirt create a device, which "
                "needs CAP_NET_ADMIN, as when starting a guest with one",
                "precreate the device as root (e.g. tapvirt-prep tap NAME --user USER) and "
                "attach <interface type='ethernet'><target dev='NAME' managed='no'/>")
        bus = _hotplug_bus(dd, dom)
        if tun_node is None:
            tun_node = os.environ.get("TAPVIRT_TUN_NODE") or None
        with connect_domain(_with_interfaces(dom, (iface,)), host, tun_node=tun_node) as conn:
            b = conn.backends[0]
            steps, fds = hp.nic_attach(iface, alias, b.spec(), bus=bus)
            row = IfaceState(alias, iface.type.value, b.device, iface.model.value, iface.mac,
                             b.delete_at_stop, link=_link(iface))
            rows = [*st.interfaces, row]
            new_dom = _with_interfaces(dom, (*dom.devices.interfaces, iface))
            commit = {"interfaces": [dataclasses.asdict(r) for r in rows],
                      "live_xml": live.format_live(new_dom, rows),
                      "to_delete": [*st.to_delete, *conn.to_delete],
                      "log": f"attached interface {alias} ({iface.mac}, {b.device or '-'})"}
            _plug(dd, dom, steps, commit, fds)
            warnings = [w.to_json() for w in conn.warnings()]
            conn.close()  # QEMU has its copies now
            conn.to_delete.clear()  # the supervisor deletes them at stop
        return Outcome("interface", alias, iface.mac, b.device, live=True, warnings=warnings)


def _attach_interface_config(name: str, dev: DeviceXml) -> Outcome:
    from tapvirt.conf.format import format_domain

    store = api._store()
    dom: Domain = store.get(name)
    iface = _parse_interface(dev, dom)
    _check_new_interface(dom.devices.interfaces, iface, name)
    if not (iface.alias or "").startswith("ua-"):
        iface = dataclasses.replace(iface, alias=None)
    store.define(format_domain(_with_interfaces(dom, (*dom.devices.interfaces, iface))))
    return Outcome("interface", iface.alias, iface.mac, iface.dev, config=True)


def _pick_interface(rows: list[IfaceState], name: str, *, mac: str | None = None,
                    type_: str | None = None, alias: str | None = None,
                    dev: str | None = None) -> IfaceState:
    hits = [r for r in rows
            if (mac is None or r.mac == mac.lower()) and (type_ is None or r.type == type_)
            and (alias is None or r.alias == alias) and (dev is None or r.device == dev)]
    what = " ".join(f"{k} {v}" for k, v in (("type", type_), ("MAC", mac), ("alias", alias),
                                             ("device", dev)) if v) or "any"
    if not hits:
        raise TapvirtError(DEVICE_NOT_FOUND, f"domain {name}",
                           f"no interface matches {what}",
                           f"see tapvirt domiflist {name}")
    if len(hits) > 1:
        raise TapvirtError(DEVICE_AMBIGUOUS, f"domain {name}",
                           f"it has {len(hits)} interfaces matching {what}",
                           "say which one to detach with its MAC (--mac, or <mac> in the XML)")
    return hits[0]


def _detach_interface_live(name: str, crit: dict[str, str | None], *, timeout: float,
                           host: Host | None) -> Outcome:
    from tapvirt.qemu.argv import hotplug as hp

    dd, _ = live.supervised(name)
    with live.ops_lock(dd):
        st = dd.read()
        row = _pick_interface(st.interfaces, name, **crit)
        dom = live.live_domain(dd)
        rows = [r for r in st.interfaces if r.alias != row.alias]
        new_dom = _with_interfaces(dom, tuple(i for i in dom.devices.interfaces
                                              if i.alias != row.alias))
        to_delete = [d for d in st.to_delete if not (row.delete_at_stop and d == row.device)]
        live.transact(dd, hp.nic_detach(row.alias, row.mac, timeout=timeout),
                      commit={"interfaces": [dataclasses.asdict(r) for r in rows],
                              "live_xml": live.format_live(new_dom, rows),
                              "to_delete": to_delete,
                              "log": f"detached interface {row.alias} ({row.mac})"},
                      timeout=timeout + 60)
    warnings = []
    if row.delete_at_stop and row.device:  # a macvtap tapvirt created for this guest
        if host is None:
            from tapvirt.host.linux import LinuxHost

            host = LinuxHost()
        try:
            host.delete_link(row.device)
        except (TapvirtError, OSError) as exc:
            warnings.append({"code": HOTPLUG_FAILED.code, "message":
                             f"could not delete {row.device}: {exc}",
                             "fix": f"as root: ip link del {row.device}"})
    return Outcome("interface", row.alias, row.mac, row.device, live=True, warnings=warnings)


def _detach_interface_config(name: str, crit: dict[str, str | None]) -> Outcome:
    from tapvirt.conf.format import format_domain

    store = api._store()
    dom: Domain = store.get(name)
    _, rows = live._config_interfaces(name)
    row = _pick_interface(rows, name, **crit)
    store.define(format_domain(_with_interfaces(dom, tuple(
        i for i in dom.devices.interfaces if i.mac != row.mac))))
    return Outcome("interface", row.alias, row.mac, row.device, config=True)


def _criteria(dev: DeviceXml, iface: Interface) -> dict[str, str | None]:
    """How a device XML names the interface to detach: its MAC when given (libvirt),
    else a user alias, else its target device; with none of them, the only interface."""
    if "mac" in dev.given:
        return {"mac": iface.mac}
    if (iface.alias or "").startswith("ua-"):
        return {"alias": iface.alias}
    if iface.dev:
        return {"dev": iface.dev}
    return {"type_": iface.type.value}


# -- disks ---------------------------------------------------------------------------------

def _is_block(path: str | None) -> bool:
    if path is None:
        return False
    try:
        return stat.S_ISBLK(os.stat(path).st_mode)
    except OSError:
        return False


def _attach_disk_live(name: str, dev: DeviceXml) -> Outcome:
    from tapvirt.conf.model import DiskBus
    from tapvirt.qemu.argv import hotplug as hp

    dd, _ = live.supervised(name)
    with live.ops_lock(dd):
        st = dd.read()
        dom = live.live_domain(dd)
        disk: Disk = _parse_disk(dev, dom)
        _check_new_disk(dom, disk, name)
        bus = _hotplug_bus(dd, dom) if disk.target_bus is DiskBus.VIRTIO else None
        steps = hp.disk_attach(disk, dom=dom, block=_is_block(disk.source_file),
                               has_scsi=any(d.target_bus is DiskBus.SCSI
                                            for d in dom.devices.disks), bus=bus)
        new_dom = _with_disks(dom, (*dom.devices.disks, disk))
        _plug(dd, dom, steps, {
            "live_xml": live.format_live(new_dom, st.interfaces),
            "log": f"attached disk {disk.target_dev} ({disk.source_file})"}, [])
    return Outcome("disk", disk.alias, device=disk.target_dev, live=True)


def _check_new_disk(dom: Domain, disk: Disk, name: str) -> None:
    for other in dom.devices.disks:
        if other.target_dev == disk.target_dev or other.alias == disk.alias:
            raise TapvirtError(DEVICE_DUPLICATE, f"domain {name}",
                               f"target {disk.target_dev} is taken by {other.source_file}",
                               "give the new disk another <target dev=...>")


def _attach_disk_config(name: str, dev: DeviceXml) -> Outcome:
    from tapvirt.conf.format import format_domain

    store = api._store()
    dom: Domain = store.get(name)
    disk: Disk = _parse_disk(dev, dom)
    _check_new_disk(dom, disk, name)
    store.define(format_domain(_with_disks(dom, (*dom.devices.disks, disk))))
    return Outcome("disk", disk.alias, device=disk.target_dev, config=True)


def _find_disk(dom: Domain, target: str, name: str) -> Disk:
    for d in dom.devices.disks:
        if d.target_dev == target:
            return d
    known = ", ".join(d.target_dev for d in dom.devices.disks) or "none"
    raise TapvirtError(DEVICE_NOT_FOUND, f"domain {name}",
                       f"no disk with target {target} (it has: {known})",
                       f"see tapvirt domblklist {name}")


def _detach_disk_live(name: str, target: str, *, timeout: float) -> Outcome:
    from tapvirt.qemu.argv import hotplug as hp

    dd, _ = live.supervised(name)
    with live.ops_lock(dd):
        st = dd.read()
        dom = live.live_domain(dd)
        disk = _find_disk(dom, target, name)
        new_dom = _with_disks(dom, tuple(d for d in dom.devices.disks if d is not disk))
        live.transact(dd, hp.disk_detach(disk, timeout=timeout), commit={
            "live_xml": live.format_live(new_dom, st.interfaces),
            "log": f"detached disk {target}"}, timeout=timeout + 60)
    return Outcome("disk", disk.alias, device=target, live=True)


def _detach_disk_config(name: str, target: str) -> Outcome:
    from tapvirt.conf.format import format_domain

    store = api._store()
    dom: Domain = store.get(name)
    disk = _find_disk(dom, target, name)
    store.define(format_domain(_with_disks(dom, tuple(d for d in dom.devices.disks
                                                       if d is not disk))))
    return Outcome("disk", disk.alias, device=target, config=True)


def _with_memory(dom: Domain, dev: DeviceXml, *, live_xml: bool) -> tuple[Domain, MemoryDevice]:
    """The domain with the new <memory> device, parsed whole, so that every rule of
    <maxMemory> holds (slots, guest cells, hotplug space, address bits) and the device
    gets its slot and alias as at define time (the lowest free slot); and that device."""
    from tapvirt.conf.format import format_domain
    from tapvirt.conf.parse import parse_document

    body = re.sub(r"^\s*<\?xml[^>]*\?>", "", dev.text, count=1)
    text = format_domain(dom, live=live_xml)
    text = (text.replace("  <devices/>", f"  <devices>\n{body}\n  </devices>", 1)
            if "  <devices/>" in text else text.replace("  </devices>", f"{body}\n  </devices>", 1))
    new = parse_document(text, source=dev.source, live=live_xml).domain
    return new, new.devices.memories[len(dom.devices.memories)]


def _attach_memory_live(name: str, dev: DeviceXml) -> Outcome:
    from tapvirt.qemu.argv import hotplug as hp

    dd, _ = live.supervised(name)
    with live.ops_lock(dd):
        st = dd.read()
        dom = live.live_domain(dd)
        new_dom, mem = _with_memory(dom, dev, live_xml=True)
        steps = hp.memory_attach(new_dom, mem)
        _plug(dd, dom, steps, {
            "live_xml": live.format_live(new_dom, st.interfaces),
            "log": f"attached memory device {mem.alias} ({mem.size_kib} KiB)"}, [])
    return Outcome("memory", mem.alias, device=f"slot {mem.slot}", live=True)


def _attach_memory_config(name: str, dev: DeviceXml) -> Outcome:
    from tapvirt.conf.format import format_domain

    store = api._store()
    new_dom, mem = _with_memory(store.get(name), dev, live_xml=False)
    store.define(format_domain(new_dom))
    return Outcome("memory", mem.alias, device=f"slot {mem.slot}", config=True)


def _no_memory_unplug(dev: DeviceXml, verb: str) -> None:
    if dev.tag == "memory":
        raise TapvirtError(HOTPLUG_UNSUPPORTED, dev.source,
                           f"{verb} of a memory device is not supported by tapvirt (the guest "
                           "must offline the memory first and acknowledge the ACPI eject)",
                           "remove it from the definition (tapvirt edit NAME) and restart "
                           "the guest")


# -- the verbs ------------------------------------------------------------------------------

def attach_device(name: str, dev: DeviceXml, *, how: Affect, host: Host | None = None,
                  tun_node: str | None = None) -> list[Outcome]:
    """Live first (the stored definition changes only if the live attach worked)."""
    out = []
    if dev.tag == "memory":
        if how.config:  # validate the definition change before touching the guest
            _with_memory(api._store().get(name), dev, live_xml=False)
        if how.live:
            out.append(_attach_memory_live(name, dev))
        if how.config:
            out.append(_attach_memory_config(name, dev))
        return out
    if how.config:  # validate the definition change before touching the guest
        _parse_device(dev, api._store().get(name))
    if how.live:
        out.append(_attach_interface_live(name, dev, host=host, tun_node=tun_node)
                   if dev.tag == "interface" else _attach_disk_live(name, dev))
    if how.config:
        out.append(_attach_interface_config(name, dev) if dev.tag == "interface"
                   else _attach_disk_config(name, dev))
    return out


def detach_device(name: str, dev: DeviceXml, *, how: Affect, timeout: float,
                  host: Host | None = None) -> list[Outcome]:
    _no_memory_unplug(dev, "detach-device")
    out = []
    ref = api._store().get(name) if how.config else live.live_domain(live.supervised(name)[0])
    if dev.tag == "interface":
        crit = _criteria(dev, _parse_interface(dev, ref))
        if how.live:
            out.append(_detach_interface_live(name, crit, timeout=timeout, host=host))
        if how.config:
            out.append(_detach_interface_config(name, crit))
        return out
    target = _parse_disk(dev, ref).target_dev
    if how.live:
        out.append(_detach_disk_live(name, target, timeout=timeout))
    if how.config:
        out.append(_detach_disk_config(name, target))
    return out


def detach_interface(name: str, type_: str, *, mac: str | None, how: Affect, timeout: float,
                     host: Host | None = None) -> list[Outcome]:
    crit: dict[str, str | None] = {"type_": type_, "mac": mac}
    out = []
    if how.live:
        out.append(_detach_interface_live(name, crit, timeout=timeout, host=host))
    if how.config:
        out.append(_detach_interface_config(name, crit))
    return out


def interface_xml(type_: str, source: str | None, *, target: str | None, mac: str | None,
                  model: str | None) -> str:
    """virsh attach-interface's arguments as an <interface> element. For type ethernet
    SOURCE is the precreated device (managed='no')."""
    from xml.sax.saxutils import quoteattr

    lines = [f"<interface type={quoteattr(type_)}>"]
    if mac:
        lines.append(f"  <mac address={quoteattr(mac)}/>")
    if type_ == "bridge":
        if not source:
            raise TapvirtError(DEVICE_FILE_INVALID, "attach-interface",
                               "type bridge needs SOURCE, the bridge", "name the bridge")
        lines.append(f"  <source bridge={quoteattr(source)}/>")
        if target:
            lines.append(f"  <target dev={quoteattr(target)}/>")
    elif type_ == "direct":
        if not source:
            raise TapvirtError(DEVICE_FILE_INVALID, "attach-interface",
                               "type direct needs SOURCE, the lower device", "name it")
        lines.append(f"  <source dev={quoteattr(source)} mode='vepa'/>")
        if target:
            lines.append(f"  <target dev={quoteattr(target)}/>")
    elif type_ == "ethernet":
        dev = source or target
        if not dev:
            raise TapvirtError(DEVICE_FILE_INVALID, "attach-interface",
                               "type ethernet needs SOURCE, the precreated tap or macvtap",
                               "name the device root precreated for you")
        if source and target and source != target:
            raise TapvirtError(DEVICE_FILE_INVALID, "attach-interface",
                               f"SOURCE {source} and --target {target} differ",
                               "for type ethernet SOURCE is the device; leave out --target")
        lines.append(f"  <target dev={quoteattr(dev)} managed='no'/>")
    elif type_ == "user":
        pass
    else:
        raise TapvirtError(HOTPLUG_UNSUPPORTED, "attach-interface",
                           f"interface type {type_!r} is not supported",
                           "use ethernet (a precreated device), bridge, direct or user")
    if model:
        lines.append(f"  <model type={quoteattr(model)}/>")
    lines.append("</interface>")
    return "\n".join(lines) + "\n"


def update_device(name: str, dev: DeviceXml, *, how: Affect) -> list[Outcome]:
    """An interface's <link state>, or a cdrom's medium. Anything else is refused."""
    _no_memory_unplug(dev, "update-device")
    ref = api._store().get(name) if how.config and not how.live else \
        live.live_domain(live.supervised(name)[0])
    out = []
    if dev.tag == "interface":
        iface = _parse_interface(dev, ref)
        if "mac" not in dev.given:
            raise TapvirtError(DEVICE_FILE_INVALID, dev.source,
                               "update-device names the interface by its <mac address>",
                               "add the interface's <mac address='...'/>")
        for scope, dom in _scopes(name, how):
            old = next((i for i in dom.devices.interfaces if i.mac == iface.mac), None)
            if old is None:
                raise TapvirtError(DEVICE_NOT_FOUND, f"domain {name}",
                                   f"no interface with MAC {iface.mac} ({scope})",
                                   f"see tapvirt domiflist {name}")
            _only_link_changes(old, iface, name)
            row = live.domif_setlink(name, iface.mac, _link(iface), config=scope == "config")
            out.append(Outcome("interface", row.alias, row.mac, row.device,
                               live=scope == "live", config=scope == "config"))
        return out
    disk = _parse_disk(dev, ref)
    for scope, dom in _scopes(name, how):
        old_disk = _find_disk(dom, disk.target_dev, name)
        _only_media_changes(old_disk, disk, name)
        if scope == "live":
            _change_media_live(name, old_disk, disk.source_file)
        else:
            from tapvirt.conf.format import format_domain

            store = api._store()
            cur: Domain = store.get(name)
            store.define(format_domain(_with_disks(cur, tuple(
                dataclasses.replace(d, source_file=disk.source_file)
                if d.target_dev == disk.target_dev else d for d in cur.devices.disks))))
        out.append(Outcome("disk", old_disk.alias, device=disk.target_dev,
                           live=scope == "live", config=scope == "config"))
    return out


def _scopes(name: str, how: Affect) -> list[tuple[str, Domain]]:
    out: list[tuple[str, Domain]] = []
    if how.live:
        out.append(("live", live.live_domain(live.supervised(name)[0])))
    if how.config:
        out.append(("config", api._store().get(name)))
    return out


def _only_link_changes(old: Interface, new: Interface, name: str) -> None:
    norm = dataclasses.replace(new, link_state=old.link_state, alias=old.alias,
                               address=new.address or old.address,
                               model=new.model if new.model_given else old.model,
                               model_given=old.model_given)
    diff = [f.name for f in dataclasses.fields(old)
            if getattr(old, f.name) != getattr(norm, f.name)]
    if diff:
        raise TapvirtError(HOTPLUG_UNSUPPORTED, f"domain {name}, interface {old.alias}",
                           f"only <link state> can change on a live interface, not "
                           f"{', '.join(diff)}",
                           "detach the interface and attach the changed one")


def _only_media_changes(old: Disk, new: Disk, name: str) -> None:
    from tapvirt.conf.model import DiskDevice

    if old.device is not DiskDevice.CDROM:
        raise TapvirtError(HOTPLUG_UNSUPPORTED, f"domain {name}, disk {old.target_dev}",
                           "only a cdrom's medium can be changed in place",
                           "detach the disk and attach the changed one")
    norm = dataclasses.replace(new, source_file=old.source_file, alias=old.alias,
                               address=new.address or old.address)
    if norm != old:
        raise TapvirtError(HOTPLUG_UNSUPPORTED, f"domain {name}, disk {old.target_dev}",
                           "only the <source file> of a cdrom can change",
                           "keep the other elements as they are (see tapvirt dumpxml)")


def _change_media_live(name: str, disk: Disk, source: str | None) -> None:
    from tapvirt.qemu.argv import hotplug as hp

    dd, _ = live.supervised(name)
    with live.ops_lock(dd):
        st = dd.read()
        dom = live.live_domain(dd)
        new_dom = _with_disks(dom, tuple(dataclasses.replace(d, source_file=source)
                                         if d.target_dev == disk.target_dev else d
                                         for d in dom.devices.disks))
        live.transact(dd, hp.cdrom_change(disk, source), commit={
            "live_xml": live.format_live(new_dom, st.interfaces),
            "log": f"cdrom {disk.target_dev}: medium {source}"})
