"""`<devices>`: disks, interfaces and character devices, plus the cross-device rules
(unique aliases, targets and boot orders). Used by `tapvirt.conf.parse`."""

from __future__ import annotations

from typing import TYPE_CHECKING

from tapvirt.conf import errors as E
from tapvirt.conf.model import (
    BridgeSource,
    Chardev,
    ChardevKind,
    ChardevType,
    Devices,
    DirectMode,
    DirectSource,
    Disk,
    DiskBus,
    DiskDevice,
    DiskFormat,
    Driver,
    DriverName,
    Interface,
    InterfaceType,
    LinkState,
    NicModel,
    Os,
    Target,
)
from tapvirt.conf.rules import (
    ALIAS_RE,
    DEFAULT_MODEL,
    DISK_DEV_RE,
    MAX_BOOT_ORDER,
    MAX_PORT,
    MAX_QUEUES,
    MTU_MAX,
    MTU_MIN,
    RESERVED_PREFIXES,
)

if TYPE_CHECKING:
    from lxml import etree

    from tapvirt.conf.parse import _Parser

_INTERFACE_CHILDREN = (
    "mac", "source", "script", "target", "model", "driver", "backend", "link", "mtu",
    "boot", "alias",
)


def parse_devices(p: _Parser, el: etree._Element, os_: Os) -> Devices:
    found = p.shape(
        el, (), ("emulator", "disk", "interface", "serial", "console"),
        multi=("disk", "interface", "serial", "console"),
    )
    emulator = None
    if (e := p.one(found, "emulator")) is not None:
        emulator = p.abspath(e, None, p.text(e))
    disks = tuple(_disk(p, d) for d in found.get("disk", []))
    ifaces = tuple(_interface(p, i, n) for n, i in enumerate(found.get("interface", [])))
    serials = _chardevs(p, found.get("serial", []), ChardevKind.SERIAL)
    consoles = _chardevs(p, found.get("console", []), ChardevKind.CONSOLE)
    _console_is_serial0(p, found.get("console", []), consoles, serials)
    _cross_checks(p, found, disks, ifaces, os_)
    return Devices(
        emulator=emulator, disks=disks, interfaces=ifaces, serials=serials, consoles=consoles
    )


# --- interfaces ---------------------------------------------------------------------


def _interface(p: _Parser, el: etree._Element, index: int) -> Interface:
    found = p.shape(el, ("type",), _INTERFACE_CHILDREN, required_attrs=("type",))
    itype = p.enum(el, "type", InterfaceType)
    m = p.one(found, "mac")
    mac = p.mac(m) if m is not None else p.new_mac()

    model, model_given = DEFAULT_MODEL, False
    if (mo := p.one(found, "model")) is not None:
        p.shape(mo, ("type",), required_attrs=("type",))
        raw = mo.get("type", "")
        if raw.lower() not in [x.value for x in NicModel]:
            raise p.fail(
                E.UNSUPPORTED_MODEL, mo, f"NIC model '{raw[:40]}' is not supported by tapvirt",
                "use one of: " + ", ".join(x.value for x in NicModel), attr="type",
            )
        model, model_given = NicModel(raw.lower()), True

    target = _target(p, p.one(found, "target"), itype, RESERVED_PREFIXES)
    source = _source(p, p.one(found, "source"), itype, el)

    driver = None
    if (d := p.one(found, "driver")) is not None:
        p.shape(d, ("name", "queues"))
        name = p.enum(d, "name", DriverName) if d.get("name") is not None else None
        queues = None
        if d.get("queues") is not None:
            queues = p.uint(d, "queues", 1, MAX_QUEUES, E.QUEUES_OUT_OF_RANGE)
            if itype is InterfaceType.USER:
                raise p.fail(
                    E.MULTIQUEUE_UNSUPPORTED, d,
                    f"interface {mac} - multiqueue is not supported for network interfaces "
                    "of type user", "remove queues= (user networking has one queue)",
                    attr="queues",
                )
            if queues > 1 and model is not NicModel.VIRTIO:
                raise p.fail(
                    E.MULTIQUEUE_UNSUPPORTED, d,
                    f"interface {mac} - {queues} queues need <model type='virtio'/>, "
                    f"model {model} has one queue",
                    "use <model type='virtio'/> or remove queues=", attr="queues",
                )
        # an empty <driver/> says nothing: it is not kept
        driver = Driver(name, queues) if name is not None or queues is not None else None

    mtu = None
    if (mt := p.one(found, "mtu")) is not None:
        p.shape(mt, ("size",), required_attrs=("size",))
        mtu = p.uint(mt, "size", MTU_MIN, MTU_MAX, E.MTU_OUT_OF_RANGE)
        if itype in (InterfaceType.DIRECT, InterfaceType.USER):
            raise p.fail(
                E.MTU_UNSUPPORTED, mt,
                f"setting MTU on interface type {itype} is not supported yet",
                "remove <mtu>; for direct, set the MTU of the parent device instead"
                if itype is InterfaceType.DIRECT else "remove <mtu>",
            )

    link = None
    if (lk := p.one(found, "link")) is not None:
        p.shape(lk, ("state",), required_attrs=("state",))
        state = lk.get("state", "")
        if state not in ("up", "down"):
            raise p.fail(
                E.INVALID_VALUE, lk, f"unknown interface link state '{state[:40]}'",
                "use state='up' or state='down'", attr="state",
            )
        link = LinkState(state)

    script = None
    if (sc := p.one(found, "script")) is not None:
        p.shape(sc, ("path",), required_attrs=("path",))
        if itype is not InterfaceType.ETHERNET:
            raise p.fail(
                E.NOT_FOR_TYPE, sc, f"scripts are not supported on interfaces of type {itype}",
                "remove <script> or use type='ethernet'",
            )
        script = p.abspath(sc, "path", sc.get("path", ""))

    backend_tap = None
    if (b := p.one(found, "backend")) is not None:
        p.shape(b, ("tap",), required_attrs=("tap",))
        if itype not in (InterfaceType.ETHERNET, InterfaceType.BRIDGE):
            raise p.fail(
                E.NOT_FOR_TYPE, b, f"Custom tap device path is not supported for: {itype}",
                "remove <backend tap=...>", attr="tap",
            )
        backend_tap = p.abspath(b, "tap", b.get("tap", ""))

    return Interface(
        type=itype, mac=mac, model=model, model_given=model_given, target=target,
        source=source, driver=driver, mtu=mtu, link_state=link,
        alias=_alias(p, p.one(found, "alias"), f"net{index}"),
        boot_order=_boot(p, p.one(found, "boot")), script=script, backend_tap=backend_tap,
    )


def _target(
    p: _Parser, t: etree._Element | None, itype: InterfaceType, reserved: tuple[str, ...]
) -> Target | None:
    if t is None:
        return None
    p.shape(t, ("dev", "managed"))
    raw = t.get("managed")
    managed: bool | None = None
    if raw is not None:
        if raw not in ("yes", "no"):
            raise p.fail(
                E.INVALID_VALUE, t,
                f"Invalid value for attribute 'managed' in element 'target': '{raw[:40]}'.",
                "use managed='no' for a precreated device, or leave managed out",
                attr="managed",
            )
        managed = raw == "yes"
    if managed is False and itype is not InterfaceType.ETHERNET:
        raise p.fail(
            E.MANAGED_NOT_ETHERNET, t,
            f"unmanaged target dev is not supported on interfaces of type '{itype}'",
            "use <interface type='ethernet'> for a precreated tap or macvtap "
            "(the privileged side enslaves it to a bridge), or remove managed='no'",
            attr="managed",
        )
    if t.get("dev") is None:
        if managed is False:
            raise p.fail(
                E.UNMANAGED_NEEDS_DEV, t, "target dev must be supplied when managed='no'",
                "name the precreated device: <target dev='mytap0' managed='no'/>",
            )
        raise p.fail(
            E.MISSING_ATTRIBUTE, t, "element <target> needs the attribute 'dev'",
            "add dev='...' or remove <target> to have the device named automatically",
        )
    if itype is InterfaceType.USER:
        raise p.fail(
            E.NOT_FOR_TYPE, t, "user networking has no host device: <target> has no meaning",
            "remove <target>",
        )
    dev = p.ifname(t, "dev")
    if managed is not False and dev.startswith(reserved):
        # libvirt's rule: a managed name with a generated prefix is dropped at define
        # time and a fresh name is picked at start (managed='yes' has nothing left to
        # hang on: <target managed='yes'/> without dev is invalid for libvirt's schema).
        return None
    return Target(dev, managed)


def _source(
    p: _Parser, s: etree._Element | None, itype: InterfaceType, iface: etree._Element
) -> BridgeSource | DirectSource | None:
    if itype is InterfaceType.BRIDGE:
        if s is None or s.get("bridge") is None:
            if s is not None:
                p.shape(s, ("bridge",))
            raise p.fail(
                E.MISSING_SOURCE, s if s is not None else iface,
                "No <source> 'bridge' attribute specified with <interface type='bridge'/>",
                "add <source bridge='br0'/> naming the host bridge",
            )
        p.shape(s, ("bridge",))
        return BridgeSource(p.ifname(s, "bridge"))
    if itype is InterfaceType.DIRECT:
        if s is None or s.get("dev") is None:
            if s is not None:
                p.shape(s, ("dev", "mode"))
            raise p.fail(
                E.MISSING_SOURCE, s if s is not None else iface,
                "No <source> 'dev' attribute specified with <interface type='direct'/>",
                "add <source dev='eth0' mode='bridge'/> naming the parent device",
            )
        p.shape(s, ("dev", "mode"))
        mode = p.enum(s, "mode", DirectMode) if s.get("mode") is not None else DirectMode.VEPA
        return DirectSource(p.ifname(s, "dev"), mode)
    if s is not None:
        cause = (
            "<source> of an ethernet interface holds host-side <ip>/<route> in libvirt; "
            "tapvirt does not configure host addresses"
            if itype is InterfaceType.ETHERNET
            else "user networking takes no <source>"
        )
        raise p.fail(
            E.NOT_FOR_TYPE, s, cause,
            "remove <source>; configure host addresses on the precreated device with "
            "`ip addr add`" if itype is InterfaceType.ETHERNET else "remove <source>",
        )
    return None


# --- disks ----------------------------------------------------------------------------


def _disk(p: _Parser, el: etree._Element) -> Disk:
    found = p.shape(
        el, ("type", "device"), ("driver", "source", "target", "readonly", "boot", "alias")
    )
    if el.get("type", "file") != "file":
        raise p.fail(
            E.INVALID_VALUE, el,
            f"Invalid value for attribute 'type' in element 'disk': '{el.get('type')}'.",
            "tapvirt supports type='file' disks (an image file or a block device path)",
            attr="type",
        )
    device = p.enum(el, "device", DiskDevice) if el.get("device") is not None else DiskDevice.DISK
    fmt = DiskFormat.RAW
    if (d := p.one(found, "driver")) is not None:
        p.shape(d, ("name", "type"))
        if d.get("name", "qemu") != "qemu":
            raise p.fail(
                E.INVALID_VALUE, d,
                f"Invalid value for attribute 'name' in element 'driver': '{d.get('name')}'.",
                "use name='qemu'", attr="name",
            )
        if d.get("type") is not None:
            fmt = p.enum(d, "type", DiskFormat)
    src = p.need(found, "source", el)
    p.shape(src, ("file",), required_attrs=("file",))
    path = p.abspath(src, "file", src.get("file", ""))
    tgt = p.need(found, "target", el)
    p.shape(tgt, ("dev", "bus"), required_attrs=("dev",))
    dev = tgt.get("dev", "")
    if tgt.get("bus") is not None:
        bus = p.enum(tgt, "bus", DiskBus)
    elif dev.startswith("vd"):
        bus = DiskBus.VIRTIO
    else:
        bus = DiskBus.SCSI  # libvirt's choice for sdX without bus=
    mt = DISK_DEV_RE[bus].match(dev)
    if mt is None:
        stem = "vd" if bus is DiskBus.VIRTIO else "sd"
        raise p.fail(
            E.INVALID_VALUE, tgt,
            f"disk target '{dev[:40]}' does not fit bus '{bus}'",
            f"name it {stem}a, {stem}b, ... for bus='{bus}'", attr="dev",
        )
    if device is DiskDevice.CDROM and bus is DiskBus.VIRTIO:
        raise p.fail(
            E.INVALID_VALUE, tgt, "a cdrom cannot sit on the virtio bus",
            "use <target dev='sda' bus='sata'/> for a cdrom", attr="bus",
        )
    readonly = device is DiskDevice.CDROM
    if (r := p.one(found, "readonly")) is not None:
        p.shape(r)
        readonly = True
    idx = _disk_index(mt.group(1))
    if bus is DiskBus.VIRTIO:
        auto = f"virtio-disk{idx}"
    elif bus is DiskBus.SATA:
        auto = f"sata{idx // 6}-0-{idx % 6}"
    else:
        auto = f"scsi{idx // 7}-0-0-{idx % 7}"
    return Disk(
        source_file=path, target_dev=dev, target_bus=bus, format=fmt, device=device,
        readonly=readonly, boot_order=_boot(p, p.one(found, "boot")),
        alias=_alias(p, p.one(found, "alias"), auto),
    )


def _disk_index(letters: str) -> int:
    """libvirt's virDiskNameToIndex: a=0 ... z=25, aa=26 ..."""
    idx = 0
    for i, c in enumerate(letters):
        idx = (idx + (1 if i else 0)) * 26 + (ord(c) - ord("a"))
    return idx


# --- character devices ---------------------------------------------------------------


def _chardevs(
    p: _Parser, els: list[etree._Element], kind: ChardevKind
) -> tuple[Chardev, ...]:
    parsed: list[tuple[etree._Element, ChardevType, str | None, bool, int | None]] = []
    for el in els:
        found = p.shape(el, ("type",), ("source", "target"), required_attrs=("type",))
        ctype = p.enum(el, "type", ChardevType)
        path, listen = None, True
        s = p.one(found, "source")
        if ctype in (ChardevType.FILE, ChardevType.UNIX):
            if s is None:
                raise p.fail(
                    E.MISSING_ELEMENT, el, f"a {kind} of type '{ctype}' needs <source path=...>",
                    f"add <source path='/path'/> inside <{kind}>",
                )
            p.shape(s, ("path", "mode") if ctype is ChardevType.UNIX else ("path",),
                    required_attrs=("path",))
            path = p.abspath(s, "path", s.get("path", ""))
            if ctype is ChardevType.UNIX:
                mode = s.get("mode", "connect")
                if mode not in ("bind", "connect"):
                    raise p.fail(
                        E.INVALID_VALUE, s,
                        f"Invalid value for attribute 'mode' in element 'source': '{mode[:40]}'.",
                        "use mode='bind' (QEMU listens) or mode='connect'", attr="mode",
                    )
                listen = mode == "bind"
        elif s is not None:
            raise p.fail(
                E.NOT_FOR_TYPE, s, f"a {kind} of type '{ctype}' takes no <source>",
                "remove <source> (the pty path is chosen at start)"
                if ctype is ChardevType.PTY else "remove <source>",
            )
        port = None
        if (t := p.one(found, "target")) is not None:
            if kind is ChardevKind.CONSOLE:
                p.shape(t, ("type", "port"))
                if t.get("type", "serial") != "serial":
                    raise p.fail(
                        E.INVALID_VALUE, t,
                        f"Invalid value for attribute 'type' in element 'target': "
                        f"'{t.get('type', '')[:40]}'.", "use type='serial'", attr="type",
                    )
            else:
                p.shape(t, ("port",))
            if t.get("port") is not None:
                port = p.uint(t, "port", 0, MAX_PORT)
        parsed.append((el, ctype, path, listen, port))
    taken: dict[int, etree._Element] = {}
    for el, _, _, _, port in parsed:
        if port is not None:
            if port in taken:
                raise p.fail(
                    E.DUPLICATE_TARGET, el,
                    f"{kind} port {port} is used twice (first at line {taken[port].sourceline})",
                    "give each a different <target port='N'/>",
                )
            taken[port] = el
    out: list[Chardev] = []
    for el, ctype, path, listen, given in parsed:
        port = given
        if port is None:  # libvirt's way: the lowest free port
            port = next(n for n in range(len(parsed) + 1) if n not in taken)
            taken[port] = el
        out.append(Chardev(kind=kind, type=ctype, path=path, unix_listen=listen, port=port))
    return tuple(out)


def _console_is_serial0(
    p: _Parser, els: list[etree._Element], consoles: tuple[Chardev, ...],
    serials: tuple[Chardev, ...],
) -> None:
    """libvirt's x86 rule: the one <console> is the first serial port, not a second device."""
    if len(consoles) > 1:
        raise p.fail(
            E.DUPLICATE_ELEMENT, els[1], "only one <console> is supported: it is serial port 0",
            "remove the extra <console>; add more <serial> ports instead",
        )
    if not consoles:
        return
    console = consoles[0]
    if console.port != 0:
        raise p.fail(
            E.INVALID_VALUE, els[0], f"the console is serial port 0, not port {console.port}",
            "write <target type='serial' port='0'/> or leave <target> out",
        )
    first = next((s for s in serials if s.port == 0), None)
    if first is not None and (first.type, first.path, first.unix_listen) != (
        console.type, console.path, console.unix_listen
    ):
        raise p.fail(
            E.INVALID_VALUE, els[0],
            "the console is serial port 0 but its type or source differs from that <serial>",
            "make <console> match <serial> port 0, or remove <console>",
        )


# --- shared small elements ------------------------------------------------------------


def _alias(p: _Parser, el: etree._Element | None, auto: str) -> str:
    if el is None:
        return auto
    p.shape(el, ("name",), required_attrs=("name",))
    name = el.get("name", "")
    if name == auto or ALIAS_RE.match(name) or (p.live and _same_family(name, auto)):
        return name
    raise p.fail(
        E.INVALID_ALIAS, el,
        f"alias '{name[:40]}' is not a user alias: user aliases start with 'ua-' and use "
        f"A-Z a-z 0-9 _ . - (tapvirt names this device '{auto}' itself)",
        f"remove <alias> or write <alias name='ua-{auto}'/>", attr="name",
    )


def _same_family(name: str, auto: str) -> bool:
    """A name tapvirt itself assigns to this kind of device (net3 for a NIC that is net1
    by position): the live XML of a guest after hotplug and unplug has such gaps. Only
    accepted in live XML; a definition may give only user aliases (ua-...)."""
    import re

    return re.fullmatch(re.sub(r"\d+", r"\\d+", re.escape(auto)), name) is not None


def _boot(p: _Parser, el: etree._Element | None) -> int | None:
    if el is None:
        return None
    p.shape(el, ("order",), required_attrs=("order",))
    return p.uint(el, "order", 1, MAX_BOOT_ORDER)


def _cross_checks(
    p: _Parser,
    found: dict[str, list[etree._Element]],
    disks: tuple[Disk, ...],
    ifaces: tuple[Interface, ...],
    os_: Os,
) -> None:
    disk_els = found.get("disk", [])
    iface_els = found.get("interface", [])
    devices: list[tuple[etree._Element, Disk | Interface]] = [
        *zip(disk_els, disks, strict=True), *zip(iface_els, ifaces, strict=True)
    ]
    targets: dict[str, tuple[etree._Element, Disk]] = {}
    for el, disk in zip(disk_els, disks, strict=True):
        if disk.target_dev in targets:
            other = targets[disk.target_dev][1]
            raise p.fail(
                E.DUPLICATE_TARGET, el,
                f"target '{disk.target_dev}' duplicated for disk sources "
                f"'{other.source_file}' and '{disk.source_file}'",
                "give each disk its own target dev (vda, vdb, ...)",
            )
        targets[disk.target_dev] = (el, disk)
    devs: dict[str, etree._Element] = {}
    for el, iface in zip(iface_els, ifaces, strict=True):
        if iface.dev is not None:
            if iface.dev in devs:
                raise p.fail(
                    E.DUPLICATE_TARGET, el,
                    f"target dev '{iface.dev}' is used by two interfaces (the other at line "
                    f"{devs[iface.dev].sourceline})",
                    "give each interface its own device; one tap cannot serve two NICs",
                )
            devs[iface.dev] = el
    aliases: dict[str, etree._Element] = {}
    boots: dict[int, etree._Element] = {}
    for el, dev in devices:
        if dev.alias is not None:
            if dev.alias in aliases:
                raise p.fail(
                    E.DUPLICATE_ALIAS, el, f"non unique alias detected: {dev.alias}",
                    f"rename one of them (the other is at line {aliases[dev.alias].sourceline})",
                )
            aliases[dev.alias] = el
        if dev.boot_order is not None:
            if os_.boot:
                raise p.fail(
                    E.BOOT_CONFLICT, el,
                    "per-device boot elements cannot be used together with os/boot elements",
                    "remove <boot dev=...> from <os> or every per-device <boot order=...>",
                )
            if dev.boot_order in boots:
                raise p.fail(
                    E.DUPLICATE_BOOT_ORDER, el,
                    f"boot order '{dev.boot_order}' used for more than one device",
                    "give each device its own order",
                )
            boots[dev.boot_order] = el
