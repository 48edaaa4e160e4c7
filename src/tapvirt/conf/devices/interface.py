"""`<interface>`: the model, parse, rules and canonical format of network interfaces.

The rules are libvirt's: the managed tristate, reserved-prefix blanking, unicast MACs,
queue and MTU ranges, which elements each interface type takes."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING

from tapvirt.conf import errors as E
from tapvirt.conf.addresses import AddressType, PciAddress, format_address, parse_address
from tapvirt.conf.devices.common import format_alias, format_boot, parse_alias, parse_boot
from tapvirt.conf.devices.netextras import (
    DRIVER_TUNING_ATTRS,
    NetTuning,
    Rom,
    format_coalesce,
    format_rom,
    format_sndbuf,
    parse_coalesce,
    parse_rom,
    parse_sndbuf,
    parse_tuning,
    tuning_attrs,
    tuning_children,
)
from tapvirt.conf.devices.netsocket import (
    SocketSource,
    format_socket_source,
    parse_socket_source,
)
from tapvirt.conf.devices.virtio import (
    VIRTIO_ATTRS,
    VirtioOptions,
    parse_virtio_options,
    virtio_attrs,
)
from tapvirt.conf.rules import MAC_RE, MAX_QUEUES, MTU_MAX, MTU_MIN, RESERVED_PREFIXES
from tapvirt.conf.xmlout import IND, Writer, a, attrs

if TYPE_CHECKING:
    from lxml import etree

    from tapvirt.conf.xml import Reader

class InterfaceType(StrEnum):
    ETHERNET = "ethernet"  # a tap: managed (tapvirt creates it) or precreated (managed='no')
    USER = "user"  # QEMU user-mode networking (slirp)
    BRIDGE = "bridge"  # a tap on a bridge: created by tapvirt, or by qemu-bridge-helper
    DIRECT = "direct"  # a macvtap that tapvirt creates on <source dev>
    # QEMU's socket backend (tapvirt.conf.devices.netsocket): no host device, no privileges
    MCAST = "mcast"  # a UDP multicast group
    UDP = "udp"  # a UDP peer
    SERVER = "server"  # a TCP connection QEMU accepts
    CLIENT = "client"  # a TCP connection QEMU makes

    @property
    def socket(self) -> bool:
        return self in _SOCKET

    @property
    def hostless(self) -> bool:
        """No host device at all: user networking and the socket types."""
        return self is InterfaceType.USER or self in _SOCKET


_SOCKET = frozenset({InterfaceType.MCAST, InterfaceType.UDP, InterfaceType.SERVER,
                     InterfaceType.CLIENT})


class NicModel(StrEnum):
    VIRTIO = "virtio"
    E1000 = "e1000"
    E1000E = "e1000e"
    RTL8139 = "rtl8139"

    @property
    def vnet_hdr(self) -> bool:
        """Whether QEMU's device model can use a virtio-net header on the tap fd."""
        return self in (NicModel.VIRTIO, NicModel.E1000E)


class DirectMode(StrEnum):
    VEPA = "vepa"
    BRIDGE = "bridge"
    PRIVATE = "private"
    PASSTHROUGH = "passthrough"


class DriverName(StrEnum):
    QEMU = "qemu"
    VHOST = "vhost"


class LinkState(StrEnum):
    UP = "up"
    DOWN = "down"


@dataclass(frozen=True)
class Target:
    """`<target dev='...' managed='...'/>`. `managed` is a tristate: None when absent."""

    dev: str
    managed: bool | None = None

    @property
    def unmanaged(self) -> bool:
        return self.managed is False


@dataclass(frozen=True)
class BridgeSource:
    bridge: str


@dataclass(frozen=True)
class DirectSource:
    dev: str
    mode: DirectMode = DirectMode.VEPA


@dataclass(frozen=True)
class Driver:
    name: DriverName | None = None
    queues: int | None = None  # 1..256 when given
    # virtio-net tuning and offload switches (tapvirt.conf.devices.netextras)
    tuning: NetTuning | None = None
    virtio: VirtioOptions | None = None  # iommu= ats= packed= page_per_vq=


@dataclass(frozen=True)
class Interface:
    type: InterfaceType
    mac: str  # lower-case aa:bb:cc:dd:ee:ff, unicast; generated 52:54:00:xx:xx:xx if absent
    model: NicModel = NicModel.VIRTIO
    # False: <model> was absent and the parser filled in the default, rtl8139 like libvirt on
    # x86 (DEFAULT_MODEL below); the canonical XML then omits <model>
    model_given: bool = True
    target: Target | None = None
    source: BridgeSource | DirectSource | SocketSource | None = None
    driver: Driver | None = None
    mtu: int | None = None  # 68..65521
    link_state: LinkState | None = None
    alias: str | None = None  # net0, net1, ... assigned stably, or user 'ua-...'
    boot_order: int | None = None
    script: str | None = None
    backend_tap: str | None = None  # <backend tap='/path'/>: the tun clone device to open
    address: PciAddress | None = None  # the guest's PCI slot, assigned after parsing
    rom: Rom | None = None  # <rom bar= file= enabled=>
    sndbuf: int | None = None  # <tune><sndbuf>: the tap's send buffer (QEMU's sndbuf=)
    coalesce_rx_frames: int | None = None  # <coalesce><rx><frames max=N>

    @property
    def queues(self) -> int:
        """The number of queues (= fds) this interface needs: at least 1."""
        if self.driver is None or self.driver.queues is None:
            return 1
        return max(1, self.driver.queues)

    @property
    def unmanaged(self) -> bool:
        return self.target is not None and self.target.unmanaged

    @property
    def dev(self) -> str | None:
        return self.target.dev if self.target is not None else None


# libvirt's QEMU driver picks rtl8139 on x86 when <model> is absent; tapvirt does the
# same so that one XML gives the same guest hardware under libvirt and under tapvirt.
DEFAULT_MODEL = NicModel.RTL8139
_CHILDREN = (
    "mac", "source", "script", "target", "model", "driver", "backend", "link", "mtu",
    "boot", "alias", "rom", "tune", "coalesce", "address",
)


def parse_interface(r: Reader, el: etree._Element, index: int) -> Interface:
    found = r.shape(el, ("type",), _CHILDREN, required_attrs=("type",))
    itype = r.enum(el, "type", InterfaceType)
    m = r.one(found, "mac")
    mac = parse_mac(r, m) if m is not None else new_mac(r)

    model, model_given = DEFAULT_MODEL, False
    if (mo := r.one(found, "model")) is not None:
        r.shape(mo, ("type",), required_attrs=("type",))
        raw = mo.get("type", "")
        if raw.lower() not in [x.value for x in NicModel]:
            raise r.fail(
                E.UNSUPPORTED_MODEL, mo, f"NIC model '{raw[:40]}' is not supported by tapvirt",
                "use one of: " + ", ".join(x.value for x in NicModel), attr="type",
            )
        model, model_given = NicModel(raw.lower()), True

    target = _target(r, r.one(found, "target"), itype, RESERVED_PREFIXES)
    source = _source(r, r.one(found, "source"), itype, el)

    driver = None
    if (d := r.one(found, "driver")) is not None:
        dfound = r.shape(d, ("name", "queues", *DRIVER_TUNING_ATTRS, *VIRTIO_ATTRS),
                         ("host", "guest"))
        tuning = parse_tuning(r, d, dfound, model is NicModel.VIRTIO)
        virtio = parse_virtio_options(r, d, model is NicModel.VIRTIO)
        name = r.enum(d, "name", DriverName) if d.get("name") is not None else None
        queues = None
        if d.get("queues") is not None:
            queues = r.uint(d, "queues", 1, MAX_QUEUES, E.QUEUES_OUT_OF_RANGE)
            if itype.hostless:
                raise r.fail(
                    E.MULTIQUEUE_UNSUPPORTED, d,
                    f"interface {mac} - multiqueue is not supported for network interfaces "
                    f"of type {itype}", f"remove queues= ({itype} networking has one queue)",
                    attr="queues",
                )
            if queues > 1 and model is not NicModel.VIRTIO:
                raise r.fail(
                    E.MULTIQUEUE_UNSUPPORTED, d,
                    f"interface {mac} - {queues} queues need <model type='virtio'/>, "
                    f"model {model} has one queue",
                    "use <model type='virtio'/> or remove queues=", attr="queues",
                )
        # an empty <driver/> says nothing: it is not kept
        if name is not None or queues is not None or tuning or virtio:
            driver = Driver(name, queues, tuning or None, virtio)

    mtu = None
    if (mt := r.one(found, "mtu")) is not None:
        r.shape(mt, ("size",), required_attrs=("size",))
        mtu = r.uint(mt, "size", MTU_MIN, MTU_MAX, E.MTU_OUT_OF_RANGE)
        if itype is InterfaceType.DIRECT or itype.hostless:
            raise r.fail(
                E.MTU_UNSUPPORTED, mt,
                f"setting MTU on interface type {itype} is not supported yet",
                "remove <mtu>; for direct, set the MTU of the parent device instead"
                if itype is InterfaceType.DIRECT else "remove <mtu>",
            )

    link = None
    if (lk := r.one(found, "link")) is not None:
        r.shape(lk, ("state",), required_attrs=("state",))
        state = lk.get("state", "")
        if state not in ("up", "down"):
            raise r.fail(
                E.INVALID_VALUE, lk, f"unknown interface link state '{state[:40]}'",
                "use state='up' or state='down'", attr="state",
            )
        link = LinkState(state)

    script = None
    if (sc := r.one(found, "script")) is not None:
        r.shape(sc, ("path",), required_attrs=("path",))
        if itype is not InterfaceType.ETHERNET:
            raise r.fail(
                E.NOT_FOR_TYPE, sc, f"scripts are not supported on interfaces of type {itype}",
                "remove <script> or use type='ethernet'",
            )
        script = r.abspath(sc, "path", sc.get("path", ""))

    backend_tap = None
    if (b := r.one(found, "backend")) is not None:
        r.shape(b, ("tap",), required_attrs=("tap",))
        if itype not in (InterfaceType.ETHERNET, InterfaceType.BRIDGE):
            raise r.fail(
                E.NOT_FOR_TYPE, b, f"Custom tap device path is not supported for: {itype}",
                "remove <backend tap=...>", attr="tap",
            )
        backend_tap = r.abspath(b, "tap", b.get("tap", ""))

    sndbuf = None
    if (tu := r.one(found, "tune")) is not None:
        if itype.hostless:
            raise r.fail(
                E.NOT_FOR_TYPE, tu, f"<tune><sndbuf> sets a tap's send buffer; {itype} "
                "networking has no tap", "remove <tune>",
            )
        sndbuf = parse_sndbuf(r, tu)
    coalesce = None
    if (co := r.one(found, "coalesce")) is not None:
        coalesce = parse_coalesce(r, co, itype.value)
    rom = parse_rom(r, ro) if (ro := r.one(found, "rom")) is not None else None

    return Interface(
        type=itype, mac=mac, model=model, model_given=model_given, target=target,
        source=source, driver=driver, mtu=mtu, link_state=link,
        alias=parse_alias(r, r.one(found, "alias"), f"net{index}"),
        boot_order=parse_boot(r, r.one(found, "boot")), script=script, backend_tap=backend_tap,
        rom=rom, sndbuf=sndbuf, coalesce_rx_frames=coalesce,
        address=_address(r, r.one(found, "address")),
    )


def _address(r: Reader, el: etree._Element | None) -> PciAddress | None:
    if el is None:
        return None
    addr = parse_address(r, el, (AddressType.PCI,), "an interface")
    assert isinstance(addr, PciAddress)
    return addr


def _target(
    r: Reader, t: etree._Element | None, itype: InterfaceType, reserved: tuple[str, ...]
) -> Target | None:
    if t is None:
        return None
    r.shape(t, ("dev", "managed"))
    raw = t.get("managed")
    managed: bool | None = None
    if raw is not None:
        if raw not in ("yes", "no"):
            raise r.fail(
                E.INVALID_VALUE, t,
                f"Invalid value for attribute 'managed' in element 'target': '{raw[:40]}'.",
                "use managed='no' for a precreated device, or leave managed out",
                attr="managed",
            )
        managed = raw == "yes"
    if managed is False and itype is not InterfaceType.ETHERNET:
        raise r.fail(
            E.MANAGED_NOT_ETHERNET, t,
            f"unmanaged target dev is not supported on interfaces of type '{itype}'",
            "use <interface type='ethernet'> for a precreated tap or macvtap "
            "(the privileged side enslaves it to a bridge), or remove managed='no'",
            attr="managed",
        )
    if t.get("dev") is None:
        if managed is False:
            raise r.fail(
                E.UNMANAGED_NEEDS_DEV, t, "target dev must be supplied when managed='no'",
                "name the precreated device: <target dev='mytap0' managed='no'/>",
            )
        raise r.fail(
            E.MISSING_ATTRIBUTE, t, "element <target> needs the attribute 'dev'",
            "add dev='...' or remove <target> to have the device named automatically",
        )
    if itype.hostless:
        raise r.fail(
            E.NOT_FOR_TYPE, t, f"{itype} networking has no host device: <target> has no "
            "meaning", "remove <target>",
        )
    dev = r.ifname(t, "dev")
    if managed is not False and dev.startswith(reserved):
        # libvirt's rule: a managed name with a generated prefix is dropped at define
        # time and a fresh name is picked at start (managed='yes' has nothing left to
        # hang on: <target managed='yes'/> without dev is invalid for libvirt's schema).
        return None
    return Target(dev, managed)


def _source(
    r: Reader, s: etree._Element | None, itype: InterfaceType, iface: etree._Element
) -> BridgeSource | DirectSource | SocketSource | None:
    if itype.socket:
        return parse_socket_source(r, s, itype.value, iface)
    if itype is InterfaceType.BRIDGE:
        if s is None or s.get("bridge") is None:
            if s is not None:
                r.shape(s, ("bridge",))
            raise r.fail(
                E.MISSING_SOURCE, s if s is not None else iface,
                "No <source> 'bridge' attribute specified with <interface type='bridge'/>",
                "add <source bridge='br0'/> naming the host bridge",
            )
        r.shape(s, ("bridge",))
        return BridgeSource(r.ifname(s, "bridge"))
    if itype is InterfaceType.DIRECT:
        if s is None or s.get("dev") is None:
            if s is not None:
                r.shape(s, ("dev", "mode"))
            raise r.fail(
                E.MISSING_SOURCE, s if s is not None else iface,
                "No <source> 'dev' attribute specified with <interface type='direct'/>",
                "add <source dev='eth0' mode='bridge'/> naming the parent device",
            )
        r.shape(s, ("dev", "mode"))
        mode = r.enum(s, "mode", DirectMode) if s.get("mode") is not None else DirectMode.VEPA
        return DirectSource(r.ifname(s, "dev"), mode)
    if s is not None:
        cause = (
            "<source> of an ethernet interface holds host-side <ip>/<route> in libvirt; "
            "tapvirt does not configure host addresses"
            if itype is InterfaceType.ETHERNET
            else "user networking takes no <source>"
        )
        raise r.fail(
            E.NOT_FOR_TYPE, s, cause,
            "remove <source>; configure host addresses on the precreated device with "
            "`ip addr add`" if itype is InterfaceType.ETHERNET else "remove <source>",
        )
    return None


def parse_mac(r: Reader, el: etree._Element) -> str:
    from tapvirt.conf.xml import clip

    r.shape(el, ("address",), required_attrs=("address",))
    raw = el.get("address", "")
    if not MAC_RE.match(raw):
        raise r.fail(
            E.INVALID_MAC, el, f"unable to parse mac address '{clip(raw)}'",
            "write six hex octets, e.g. 52:54:00:12:34:56", attr="address",
        )
    mac = raw.lower()
    if int(mac[:2], 16) & 1:
        raise r.fail(
            E.MULTICAST_MAC, el, f"expected unicast mac address, found multicast '{mac}'",
            "clear the lowest bit of the first octet (e.g. 52:54:00:...)", attr="address",
        )
    return mac


def new_mac(r: Reader) -> str:
    """libvirt's generated MAC: QEMU's OUI 52:54:00 and three random octets."""
    bits = r.rand.getrandbits(24)
    mac = "52:54:00:" + ":".join(f"{(bits >> s) & 0xFF:02x}" for s in (16, 8, 0))
    r.generated_macs.append(mac)
    return mac


def format_interface(
    iface: Interface, w: Writer, live: bool, actual: Mapping[str, str]
) -> None:
    i2, i3 = IND * 2, IND * 3
    w(f"{i2}<interface type={a(iface.type)}>")
    w(f"{i3}<mac address={a(iface.mac)}/>")
    src = iface.source
    if isinstance(src, DirectSource):
        w(f"{i3}<source dev={a(src.dev)} mode={a(src.mode)}/>")
    elif isinstance(src, SocketSource):
        for line in format_socket_source(src, i3):
            w(line)
    elif src is not None:
        w(f"{i3}<source bridge={a(src.bridge)}/>")
    if iface.script is not None:
        w(f"{i3}<script path={a(iface.script)}/>")
    _format_target(iface, w, live, actual)
    if iface.model_given:
        w(f"{i3}<model type={a(iface.model)}/>")
    drv = iface.driver
    if drv is not None and (drv.name or drv.queues is not None or drv.tuning or drv.virtio):
        # libvirt's order: name txmode ioeventfd event_idx queues rx_queue_size tx_queue_size
        tuning = drv.tuning or NetTuning()
        given = attrs(name=drv.name) + tuning_attrs(NetTuning(
            txmode=tuning.txmode, ioeventfd=tuning.ioeventfd, event_idx=tuning.event_idx,
        )) + attrs(queues=None if drv.queues is None else str(drv.queues)) + tuning_attrs(
            NetTuning(rx_queue_size=tuning.rx_queue_size, tx_queue_size=tuning.tx_queue_size)
        ) + virtio_attrs(drv.virtio)
        children = tuning_children(tuning, IND * 4)
        if children:
            w(f"{i3}<driver{given}>")
            for line in children:
                w(line)
            w(f"{i3}</driver>")
        else:
            w(f"{i3}<driver{given}/>")
    if iface.backend_tap is not None:
        w(f"{i3}<backend tap={a(iface.backend_tap)}/>")
    if iface.sndbuf is not None:
        for line in format_sndbuf(iface.sndbuf, i3):
            w(line)
    if iface.link_state is not None:
        w(f"{i3}<link state={a(iface.link_state)}/>")
    if iface.mtu is not None:
        w(f"{i3}<mtu size='{iface.mtu}'/>")
    if iface.coalesce_rx_frames is not None:
        for line in format_coalesce(iface.coalesce_rx_frames, i3):
            w(line)
    format_boot(iface.boot_order, w)
    if iface.rom is not None:
        w(format_rom(iface.rom, i3))
    format_alias(iface.alias, w, live)
    if iface.address is not None:
        w(f"{i3}{format_address(iface.address)}")
    w(f"{i2}</interface>")


def _format_target(iface: Interface, w: Writer, live: bool, actual: Mapping[str, str]) -> None:
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
    given = attrs(dev=dev, managed=None if managed is None else ("yes" if managed else "no"))
    w(f"{IND * 3}<target{given}/>")
