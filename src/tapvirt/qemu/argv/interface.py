"""Network interfaces: -netdev and the NIC's -device (also used by hotplug), and the QMP
commands for link state. libvirt 9.0 with QEMU 7.2: JSON, fd values as JSON strings,
`fds` joined with ':'."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from tapvirt.conf.model import Interface, LinkState, NicModel
from tapvirt.qemu.argv.encode import jsonarg
from tapvirt.qemu.argv.netextras import (
    rom_props,
    tuning_props_after_mq,
    tuning_props_before_mq,
)
from tapvirt.qemu.argv.virtio import virtio_device

if TYPE_CHECKING:
    from tapvirt.conf.model import Domain

NetdevKind = Literal["tap", "user", "socket"]



@dataclass(frozen=True)
class NetBackend:
    """What the command line needs to know of one interface's host side."""

    alias: str
    kind: NetdevKind
    tap_fds: tuple[int, ...] = ()  # fds in the launcher (placeholders for a dry run)
    vhost_fds: tuple[int, ...] = ()
    host_mtu: int | None = None  # MTU told to a virtio guest (<mtu> or inherited)
    socket: tuple[tuple[str, str], ...] = ()  # kind socket: the -netdev socket options


def socket_options(iface: Interface) -> tuple[tuple[str, str], ...]:
    """`-netdev socket` of an mcast/udp/server/client interface, as libvirt 9.0's
    qemuBuildHostNetProps: connect=, listen=, mcast=, or udp= + localaddr= (host:port)."""
    from tapvirt.conf.devices.netsocket import SocketSource

    src = iface.source
    assert isinstance(src, SocketSource), "the parser gives every socket type its source"
    key = {"client": "connect", "server": "listen"}.get(iface.type.value, iface.type.value)
    out: tuple[tuple[str, str], ...] = ((key, src.endpoint()),)
    if src.local_address is not None:
        out += (("localaddr", src.local_endpoint()),)
    return out


def netdev(backend: NetBackend, numbers: Mapping[int, int | str] | None = None,
           sndbuf: int | None = None) -> dict[str, Any]:
    """The -netdev object. `numbers` maps the backend's fds to what QEMU calls them: fd
    numbers on the command line, or `getfd` names (e.g. tapfd-net10) for netdev_add.
    `sndbuf`: the interface's <tune><sndbuf> (taps only)."""
    nid = f"host{backend.alias}"
    if backend.kind == "user":
        return {"type": "user", "id": nid}
    if backend.kind == "socket":
        return {"type": "socket", **dict(backend.socket), "id": nid}
    num = numbers or {}
    taps = [str(num.get(fd, fd)) for fd in backend.tap_fds]
    out: dict[str, Any] = {"type": "tap"}
    if len(taps) == 1:
        out["fd"] = taps[0]
    else:
        out["fds"] = ":".join(taps)
    if backend.vhost_fds:
        vhosts = [str(num.get(fd, fd)) for fd in backend.vhost_fds]
        out["vhost"] = True
        if len(vhosts) == 1:
            out["vhostfd"] = vhosts[0]
        else:
            out["vhostfds"] = ":".join(vhosts)
    if sndbuf is not None:
        out["sndbuf"] = sndbuf
    out["id"] = nid
    return out


def nic_driver(model: NicModel) -> str:
    return "virtio-net-pci" if model is NicModel.VIRTIO else model.value


def nic_device(
    iface: Interface, alias: str, backend: NetBackend, dom: Domain | None = None
) -> dict[str, Any]:
    """The -device object of a NIC (also the device_add arguments on hotplug); with the
    domain, the interface's PCI slot (bus, addr) as well."""
    out = virtio_device(nic_driver(iface.model), iface.driver.virtio if iface.driver else None)
    if iface.model is NicModel.VIRTIO:
        tuning = iface.driver.tuning if iface.driver is not None else None
        out.update(tuning_props_before_mq(tuning))
        queues = max(1, len(backend.tap_fds)) if backend.kind == "tap" else 1
        if queues > 1:
            out["mq"] = True
            out["vectors"] = 2 * queues + 2
        out.update(tuning_props_after_mq(tuning))
        if backend.host_mtu is not None:
            out["host_mtu"] = backend.host_mtu
    out["netdev"] = f"host{alias}"
    out["id"] = alias
    out["mac"] = iface.mac
    if iface.boot_order is not None:
        out["bootindex"] = iface.boot_order
    if dom is not None:
        from tapvirt.qemu.argv.controller import address_props

        out.update(address_props(dom, iface.address))
    out.update(rom_props(iface.rom))  # after the address, as libvirt writes them
    return out


def link_state_commands(dom: Domain) -> list[dict[str, Any]]:
    """QMP commands to send before `cont`: <link state='down'/> is not an argv option."""
    return [
        {"execute": "set_link", "arguments": {"name": alias_of(i, dom), "up": False}}
        for i in dom.devices.interfaces
        if i.link_state is LinkState.DOWN
    ]


def interface_alias(dom: Domain, index: int) -> str:
    return alias_of(dom.devices.interfaces[index], dom)


def alias_of(iface: Interface, dom: Domain) -> str:
    if iface.alias:
        return iface.alias
    # conf assigns aliases; a hand-built Domain without them gets libvirt's netN by position
    return f"net{dom.devices.interfaces.index(iface)}"


def interface_args(
    dom: Domain, by_alias: Mapping[str, NetBackend], numbers: Mapping[int, int | str]
) -> list[str]:
    """-netdev and -device of every interface, in order."""
    argv: list[str] = []
    for iface in dom.devices.interfaces:
        alias = alias_of(iface, dom)
        backend = by_alias.get(alias)
        if backend is None:
            raise ValueError(f"no network backend for interface {alias}")
        argv += ["-netdev", jsonarg(netdev(backend, numbers, iface.sndbuf)),
                 "-device", jsonarg(nic_device(iface, alias, backend, dom))]
    return argv
