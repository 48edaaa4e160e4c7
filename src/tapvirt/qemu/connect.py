"""Connect a domain's interfaces to the host: checks first, then fds, rolled back on failure.

    with connect_domain(dom, host, tun_node=...) as conn:   # closes/deletes on an exception
        argv = build_argv(dom, conn.specs(), qmp_socket=...)
        ... spawn QEMU with conn's fds (argv.fd_layout / remap_actions) ...
    conn.close()          # the parent's copies, once QEMU inherited them
    ...
    conn.cleanup()        # at stop: delete the macvtaps tapvirt created (conn.to_delete)

Per interface type (libvirt-behaviour.md §2):
  ethernet managed='no'  checks, then attach to the precreated tap (TUNSETIFF, vnet_hdr for
                         virtio/e1000e, IFF_MULTI_QUEUE iff queues > 1) or open the macvtap's
                         /dev/tap<ifindex>; the device itself is never changed or deleted.
  ethernet managed       create a non-persistent tap (MAC = guest MAC with first octet FE, or
                         FA; MTU; UP). Needs CAP_NET_ADMIN. It vanishes with its last fd.
  bridge                 privileged: the same, enslaved to the bridge. Unprivileged: tapvirt
                         runs qemu-bridge-helper itself and receives one fd (one queue).
  direct                 privileged: create a macvtap on <source dev>, open it; deleted at stop.
  user                   QEMU's user networking: no host device, no fd.

`check_domain` is the read-only half (what `tapvirt check` prints); `plan_domain` predicts
the backends without opening anything (what `tapvirt domxml-to-native` prints).
"""

from __future__ import annotations

import contextlib
import errno
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from tapvirt import netcodes as nc
from tapvirt.conf.devices.netsocket import SocketSource
from tapvirt.conf.model import (
    DirectMode,
    Domain,
    DomainType,
    DriverName,
    Interface,
    InterfaceType,
    NicModel,
)
from tapvirt.errors import ErrorCode, TapvirtError
from tapvirt.host.api import Host, Identity, LinkInfo, LinkKind, OwnedFds
from tapvirt.qemu.argv import NetBackend, NetdevKind, interface_alias, socket_options
from tapvirt.qemu.checks import (
    DEFAULT_TUN_NODE,
    Facts,
    Finding,
    check_interface,
    effective_host_mtu,
    invalid_name_reason,
    label,
    managed_tap_mac,
    may_be_attached,
)

BRIDGE_HELPER = "/usr/lib/qemu/qemu-bridge-helper"


class BridgeHelper(Protocol):
    def __call__(self, bridge: str, *, helper: str, vnet_hdr: bool) -> OwnedFds: ...


VhostOpener = Callable[[int], OwnedFds]


@dataclass
class Backend:
    """The host side of one interface once connected. Owns its fds until `close()`."""

    iface: Interface
    alias: str
    kind: NetdevKind
    fds: OwnedFds = field(default_factory=OwnedFds)
    vhost_fds: OwnedFds = field(default_factory=OwnedFds)
    device: str | None = None  # the actual host device (vnet0, mytap0, macvtap0, ...)
    delete_at_stop: bool = False  # a macvtap tapvirt created: only explicit deletion removes it
    host_mtu: int | None = None
    warnings: tuple[Finding, ...] = ()

    def spec(self) -> NetBackend:
        return NetBackend(self.alias, self.kind, self.fds.fds, self.vhost_fds.fds, self.host_mtu,
                          socket_options(self.iface) if self.kind == "socket" else ())


@dataclass(frozen=True)
class InterfaceReport:
    """The result of checking one interface (one object of `tapvirt check --json`)."""

    iface: Interface
    alias: str
    device: str | None
    findings: tuple[Finding, ...]
    facts: Facts | None = None  # what the checks saw; connect reuses it (no second lookup)

    @property
    def verdict(self) -> str:
        if any(not f.warning for f in self.findings):
            return "error"
        return "warning" if self.findings else "ok"

    def first_error(self) -> Finding | None:
        return next((f for f in self.findings if not f.warning), None)


class Connection:
    """All backends of a domain. On failure everything opened or created so far is undone."""

    def __init__(self, host: Host) -> None:
        self._host = host
        self.backends: list[Backend] = []
        self.to_delete: list[str] = []  # managed macvtaps to delete at stop

    def specs(self) -> list[NetBackend]:
        return [b.spec() for b in self.backends]

    def warnings(self) -> list[Finding]:
        return [w for b in self.backends for w in b.warnings]

    def fds(self) -> list[int]:
        return [fd for b in self.backends for fd in (*b.fds.fds, *b.vhost_fds.fds)]

    def close(self) -> None:
        """Close the launcher's copies of every fd (after QEMU inherited them)."""
        for b in self.backends:
            b.fds.close()
            b.vhost_fds.close()

    def cleanup(self) -> list[TapvirtError]:
        """Close the fds and delete the devices tapvirt created; returns what failed."""
        self.close()
        failed: list[TapvirtError] = []
        for name in reversed(self.to_delete):
            try:
                self._host.delete_link(name)
            except TapvirtError as err:
                err.details.setdefault("device", name)
                failed.append(err)
            except OSError as exc:
                failed.append(TapvirtError(
                    nc.HOST_ERROR, f"device {name}",
                    f"could not delete it: {os.strerror(exc.errno or 0)}",
                    f"delete it as root: ip link del {name}", details={"device": name}))
        self.to_delete.clear()
        return failed

    def __enter__(self) -> Connection:
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is None:
            return
        left = [e.details.get("device") for e in self.cleanup()]
        if left and isinstance(exc, TapvirtError):
            # The original error stays the one raised; the user must still learn what
            # tapvirt created and could not remove.
            names = " ".join(str(n) for n in left)
            exc.details["left_behind"] = left
            exc.fix = (exc.fix + "; " if exc.fix else "") + (
                f"tapvirt could not remove what it created: as root, ip link del {names}"
                if len(left) == 1 else
                "tapvirt could not remove what it created: as root, for d in "
                f"{names}; do ip link del $d; done")


def user_label(uid: int) -> str:
    """How fixes name the user: the login name, or the uid if it has none."""
    import pwd

    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def tun_node_for(iface: Interface, tun_node: str | None) -> str:
    """<backend tap='PATH'> wins (per interface), then the launcher's setting, then the
    default. Unlike libvirt tapvirt also honours <backend tap> unprivileged: opening a node
    with one's own permissions is exactly how a private tun node is used."""
    return iface.backend_tap or tun_node or DEFAULT_TUN_NODE


def macvtap_node_for(iface: Interface, link: LinkInfo) -> str:
    """A precreated macvtap is opened through /dev/tap<ifindex>, or through the private node
    named in <backend tap='PATH'/> (for when /dev/tapN collides across namespaces)."""
    return iface.backend_tap or f"/dev/tap{link.ifindex}"


def gather_facts(iface: Interface, host: Host, *, tun_node: str | None, user: str,
                 identity: Identity | None = None) -> Facts:
    """Read, never change, what the checks of `iface` need."""
    ident = identity if identity is not None else host.identity()
    link = _lookup(host, iface.dev)
    facts = Facts(identity=ident, user=user, link=link)
    src = iface.source
    if isinstance(src, SocketSource):  # what QEMU binds: a server's address, udp's local
        bound = src.address if iface.type is InterfaceType.SERVER else src.local_address
        if bound is not None and not host.address_is_local(bound):
            facts = _with(facts, not_local=(bound,))
    needs_tun = iface.type in (InterfaceType.ETHERNET, InterfaceType.BRIDGE) and not (
        link is not None and link.kind is LinkKind.MACVTAP and iface.unmanaged)
    if iface.type is InterfaceType.BRIDGE and not ident.net_admin:
        needs_tun = False  # qemu-bridge-helper opens the tun device itself
    if needs_tun:
        path = tun_node_for(iface, tun_node)
        facts = _with(facts, tun_node_path=path, tun_node=host.node_status(path))
    if link is not None and iface.unmanaged:
        if link.kind is LinkKind.MACVTAP:
            node = macvtap_node_for(iface, link)
            facts = _with(facts, macvtap_node_path=node, macvtap_node=host.node_status(node))
        elif (link.kind is LinkKind.TAP and link.tun is not None
              and not link.tun.multi_queue and may_be_attached(link)):
            # The /proc scan that names the holder costs milliseconds: only when needed.
            facts = _with(facts, holders=host.tap_holders(link.name))
    src = iface.source
    src_name = getattr(src, "bridge", None) or getattr(src, "dev", None)
    if src_name:
        facts = _with(facts, source=_lookup(host, src_name))
    return facts


def _lookup(host: Host, name: str | None) -> LinkInfo | None:
    # An invalid name is a finding of the checks, not a lookup error.
    if not name or invalid_name_reason(name) is not None:
        return None
    return host.lookup(name)


def _with(facts: Facts, **changes: Any) -> Facts:
    return replace(facts, **changes)


def check_domain(dom: Domain, host: Host, *, tun_node: str | None = None,
                 user: str | None = None) -> list[InterfaceReport]:
    """Read-only pre-flight of every interface. Never opens anything."""
    ident = host.identity()
    who = user if user is not None else user_label(ident.uid)
    reports = []
    for i, iface in enumerate(dom.devices.interfaces):
        facts = gather_facts(iface, host, tun_node=tun_node, user=who, identity=ident)
        findings = check_interface(iface, facts)
        findings += _vhost_findings(dom, iface, host)
        reports.append(InterfaceReport(iface, interface_alias(dom, i), _device(iface),
                                       tuple(findings), facts))
    return reports


def _device(iface: Interface) -> str | None:
    if iface.dev:
        return iface.dev
    return getattr(iface.source, "bridge", None) or getattr(iface.source, "dev", None)


def wants_vhost(dom: Domain, iface: Interface) -> bool:
    """libvirt's rule: kvm, virtio, a tap backend, and not <driver name='qemu'>."""
    return (dom.type is DomainType.KVM and iface.model is NicModel.VIRTIO
            and not iface.type.hostless
            and not (iface.driver is not None and iface.driver.name is DriverName.QEMU))


def _explicit_vhost(iface: Interface) -> bool:
    return iface.driver is not None and iface.driver.name is DriverName.VHOST


def _vhost_findings(dom: Domain, iface: Interface, host: Host) -> list[Finding]:
    if not _explicit_vhost(iface):
        return []
    if wants_vhost(dom, iface) and host.vhost_net_available():
        return []
    why = ("/dev/vhost-net cannot be opened" if wants_vhost(dom, iface)
           else "vhost-net needs <domain type='kvm'> and a virtio model")
    return [Finding(nc.VHOST_UNAVAILABLE, label(iface), None,
                    f"<driver name='vhost'> was requested but {why}",
                    "remove name='vhost' from <driver> (tapvirt then uses QEMU's own "
                    "virtio-net backend)")]


def raise_first_error(reports: list[InterfaceReport]) -> list[Finding]:
    """Raise the first error finding as a TapvirtError; return the warnings otherwise."""
    for r in reports:
        err = r.first_error()
        if err is not None:
            raise err.error()
    return [f for r in reports for f in r.findings]


def plan_domain(dom: Domain, host: Host, *, tun_node: str | None = None) -> list[NetBackend]:
    """The backends `connect_domain` would produce, with placeholder fds; opens nothing.

    Used by `domxml-to-native`: with argv's fd_base numbering the placeholders turn into
    the same numbers `start` passes."""
    placeholder = iter(range(-1, -100000, -1))
    out = []
    for i, iface in enumerate(dom.devices.interfaces):
        alias = interface_alias(dom, i)
        if iface.type is InterfaceType.USER:
            out.append(NetBackend(alias, "user"))
            continue
        if iface.type.socket:
            out.append(NetBackend(alias, "socket", socket=socket_options(iface)))
            continue
        queues = _queues(iface, host)
        link = _lookup(host, iface.dev) if iface.unmanaged else None
        device_mtu = link.mtu if link is not None else None
        if iface.type is InterfaceType.BRIDGE:
            br = _lookup(host, getattr(iface.source, "bridge", ""))
            device_mtu = br.mtu if br is not None else None
        elif iface.type is InterfaceType.DIRECT:
            lower = _lookup(host, getattr(iface.source, "dev", ""))
            device_mtu = lower.mtu if lower is not None else None
        vhost = queues if wants_vhost(dom, iface) and host.vhost_net_available() else 0
        out.append(NetBackend(
            alias, "tap",
            tuple(next(placeholder) for _ in range(queues)),
            tuple(next(placeholder) for _ in range(vhost)),
            effective_host_mtu(iface, device_mtu)))
    return out


def _queues(iface: Interface, host: Host) -> int:
    if iface.type is InterfaceType.BRIDGE and not host.identity().net_admin:
        return 1  # qemu-bridge-helper hands over one fd
    return iface.queues


def connect_domain(
    dom: Domain,
    host: Host,
    *,
    tun_node: str | None = None,
    user: str | None = None,
    bridge_helper: BridgeHelper | None = None,
    helper_path: str = BRIDGE_HELPER,
    vhost_opener: VhostOpener | None = None,
) -> Connection:
    """Check every interface, then connect them in order. Raises TapvirtError (the first
    problem) with everything already opened closed and everything created deleted."""
    reports = check_domain(dom, host, tun_node=tun_node, user=user)
    who = next((r.facts.user for r in reports if r.facts), user or "")
    raise_first_error(reports)
    conn = Connection(host)
    with conn:
        for i, (iface, report) in enumerate(zip(dom.devices.interfaces, reports, strict=True)):
            backend = _connect_one(
                dom, iface, interface_alias(dom, i), host, conn,
                facts=report.facts or gather_facts(iface, host, tun_node=tun_node, user=who),
                tun_node=tun_node_for(iface, tun_node), user=who,
                bridge_helper=bridge_helper, helper_path=helper_path,
                vhost_opener=vhost_opener)
            backend.warnings = report.findings
    return conn


def _connect_one(
    dom: Domain, iface: Interface, alias: str, host: Host, conn: Connection, *,
    facts: Facts, tun_node: str, user: str, bridge_helper: BridgeHelper | None, helper_path: str,
    vhost_opener: VhostOpener | None,
) -> Backend:
    kind: NetdevKind = ("user" if iface.type is InterfaceType.USER
                        else "socket" if iface.type.socket else "tap")
    backend = Backend(iface, alias, kind)
    # Registered before anything is opened: a failure below rolls back through `conn`.
    conn.backends.append(backend)
    if iface.type.hostless:
        return backend  # QEMU opens its user-mode stack or socket itself
    with _mapped(iface, host, tun_node, user):
        _open_host_side(iface, facts, host, conn, backend, tun_node=tun_node,
                        bridge_helper=bridge_helper, helper_path=helper_path)
        if wants_vhost(dom, iface) and host.vhost_net_available():
            backend.vhost_fds = _open_vhost(iface, backend, vhost_opener)
    return backend


def _open_host_side(
    iface: Interface, facts: Facts, host: Host, conn: Connection, backend: Backend, *,
    tun_node: str,
    bridge_helper: BridgeHelper | None, helper_path: str,
) -> None:
    vnet_hdr = iface.model.vnet_hdr
    ident = facts.identity
    if iface.type is InterfaceType.ETHERNET and iface.unmanaged:
        assert iface.dev is not None
        link = facts.link  # as checked a moment ago; the kernel re-checks at open
        if link is None:
            raise OSError(errno.ENODEV, os.strerror(errno.ENODEV))
        if link.kind is LinkKind.MACVTAP:
            backend.fds = host.open_macvtap(link, node=macvtap_node_for(iface, link),
                                            vnet_hdr=vnet_hdr, queues=iface.queues)
        else:
            backend.fds = host.open_tap(iface.dev, tun_node=tun_node, vnet_hdr=vnet_hdr,
                                        queues=iface.queues)
        backend.device = iface.dev
        backend.host_mtu = effective_host_mtu(iface, link.mtu)
    elif iface.type is InterfaceType.ETHERNET:
        backend.device, backend.fds = host.create_tap(
            iface.dev, tun_node=tun_node, mac=managed_tap_mac(iface.mac), mtu=iface.mtu,
            bridge=None, vnet_hdr=vnet_hdr, queues=iface.queues)
        backend.host_mtu = iface.mtu
    elif iface.type is InterfaceType.BRIDGE:
        bridge = getattr(iface.source, "bridge", "")
        br = facts.source
        backend.host_mtu = effective_host_mtu(iface, br.mtu if br is not None else None)
        if ident.net_admin:
            backend.device, backend.fds = host.create_tap(
                iface.dev, tun_node=tun_node, mac=managed_tap_mac(iface.mac), mtu=iface.mtu,
                bridge=bridge, vnet_hdr=vnet_hdr, queues=iface.queues)
        else:
            run = bridge_helper or _real_bridge_helper
            backend.fds = run(bridge, helper=helper_path, vnet_hdr=vnet_hdr)
            backend.device = _helper_tap_name(backend.fds)
    elif iface.type is InterfaceType.DIRECT:
        src = getattr(iface.source, "dev", "")
        mode = getattr(iface.source, "mode", DirectMode.VEPA)
        info = host.create_macvtap(iface.dev, link=src, mode=_kernel_mode(mode),
                                   mac=iface.mac, up=True)
        conn.to_delete.append(info.name)
        backend.device = info.name
        backend.delete_at_stop = True
        backend.host_mtu = effective_host_mtu(iface, info.mtu)
        backend.fds = host.open_macvtap(info, node=f"/dev/tap{info.ifindex}",
                                        vnet_hdr=vnet_hdr, queues=iface.queues)


def _kernel_mode(mode: DirectMode) -> str:
    return "passthru" if mode is DirectMode.PASSTHROUGH else mode.value


def _open_vhost(iface: Interface, backend: Backend, opener: VhostOpener | None) -> OwnedFds:
    if opener is None:
        from tapvirt.host.vhost import open_vhost_net

        opener = open_vhost_net
    try:
        return opener(len(backend.fds))
    except OSError as exc:
        if _explicit_vhost(iface):
            raise TapvirtError(
                nc.VHOST_UNAVAILABLE, f"interface {label(iface)}",
                f"<driver name='vhost'> was requested but /dev/vhost-net cannot be opened: "
                f"{os.strerror(exc.errno or 0)}",
                "remove name='vhost' from <driver>") from None
        return OwnedFds()  # libvirt: a warning, and QEMU's own virtio-net backend


def _helper_tap_name(fds: OwnedFds) -> str | None:
    """The kernel names the helper's tap (tap0, tap1...): TUNGETIFF on its fd says which,
    as libvirt asks, so domiflist, domifstat and the live XML name it. None for an fd that
    is no tun fd (the FakeHost's)."""
    from tapvirt.host.tunioctl import get_iff

    try:
        return get_iff(fds.fds[0])[0] or None
    except OSError:
        return None


def _real_bridge_helper(bridge: str, *, helper: str, vnet_hdr: bool) -> OwnedFds:
    from tapvirt.qemu.bridge_helper import run_bridge_helper

    return run_bridge_helper(bridge, helper=helper, vnet_hdr=vnet_hdr)


@contextlib.contextmanager
def _mapped(iface: Interface, host: Host, tun_node: str, user: str) -> Iterator[None]:
    """Turn a kernel errno from the host layer into the network code a user can act on."""
    try:
        yield
    except OSError as exc:
        raise map_os_error(exc, iface, host, tun_node, user) from None
    except TapvirtError as err:
        if err.subject.startswith("interface "):
            raise
        # The host names the device; the user also needs to know which interface it is.
        raise TapvirtError(err.code, f"interface {label(iface)}, {err.subject}", err.cause,
                           err.fix, line=err.line, details=err.details) from None


def map_os_error(exc: OSError, iface: Interface, host: Host, tun_node: str,
                 user: str) -> TapvirtError:
    code = exc.errno or 0
    subject = f"interface {label(iface)}"
    text = os.strerror(code)
    dev = iface.dev
    mq = " multi_queue" if iface.queues > 1 else ""
    create = (f"ip tuntap add mode tap user {user}{mq} name {dev or 'TAP'} && "
              f"ip link set {dev or 'TAP'} up")

    def err(ecode: ErrorCode, cause: str, fix: str) -> TapvirtError:
        return TapvirtError(ecode, subject, cause, fix,
                            details={"device": dev, "errno": code} if dev else {"errno": code})

    if iface.type is InterfaceType.ETHERNET and iface.unmanaged:
        assert dev is not None
        link = host.lookup(dev)
        if link is None or code in (errno.ENODEV, errno.ENXIO):
            return err(nc.DEVICE_MISSING, f"device {dev} does not exist",
                       f"create it as root: {create}")
        if link.kind is LinkKind.MACVTAP:
            node = macvtap_node_for(iface, link)
            if code in (errno.ENOENT, errno.ENODEV):
                return err(nc.MACVTAP_NODE_MISSING, f"cannot open {node}: {text}",
                           f"as root: mknod {node} c MAJOR MINOR && chown {user} {node}")
            if code in (errno.EACCES, errno.EPERM, errno.EXDEV):
                why = ("it is another device's node" if code == errno.EXDEV
                       else f"permission denied ({text})")
                return err(nc.MACVTAP_NODE_FOREIGN, f"cannot use {node} for {dev}: {why}",
                           f"as root: chown {user} {node} (or make a private node for {dev} "
                           "and name it in <backend tap='PATH'/>)")
        else:
            if code in (errno.EACCES, errno.ENOENT, errno.ENOTTY):
                return err(nc.TUN_NODE_INACCESSIBLE, f"cannot use tun node {tun_node}: {text}",
                           f"as root: mknod -m 0600 NODE c 10 200 && chown {user} NODE, then "
                           "pass --tun-node NODE")
            if code == errno.EPERM:
                return err(nc.DEVICE_FOREIGN_OWNER,
                           f"the kernel refused to attach to tap {dev} (EPERM): it belongs to "
                           "another user", f"recreate it for {user} as root: "
                           f"ip link del {dev} && {create}")
            if code == errno.EINVAL:
                if link.kind is LinkKind.TAP:
                    return err(nc.QUEUES_MISMATCH,
                               f"the kernel refused to attach to tap {dev} (EINVAL): its "
                               f"multi_queue flag does not match {iface.queues} queue(s)",
                               f"recreate it as root with{'' if iface.queues > 1 else 'out'} "
                               f"multi_queue: ip link del {dev} && {create}")
                return err(nc.DEVICE_WRONG_KIND, f"device {dev} is not a tap (EINVAL)",
                           f"replace it with a tap as root: ip link del {dev} && {create}")
            if code == errno.EBUSY:
                pids = host.tap_holders(dev)
                who = f"process {', '.join(map(str, pids))}" if pids else "another process"
                return err(nc.DEVICE_BUSY,
                           f"single-queue tap {dev} is already attached by {who} (EBUSY)",
                           "stop the process that holds it, or give this guest its own tap")
    else:
        if code == errno.EPERM:
            return err(nc.MANAGED_NEEDS_PRIVILEGE,
                       f"creating a device needs CAP_NET_ADMIN ({text})",
                       "precreate a tap as root and use it with managed='no'")
        if code in (errno.EEXIST, errno.EBUSY):
            return err(nc.DEVICE_EXISTS, f"The {dev} interface already exists",
                       f"add managed='no' to use {dev}, or choose another name")
        if code == errno.ENODEV and iface.type is InterfaceType.BRIDGE:
            br = getattr(iface.source, "bridge", "")
            return err(nc.BRIDGE_MISSING, f"bridge {br} does not exist",
                       f"create it as root: ip link add {br} type bridge && ip link set {br} up")
        if code == errno.ENODEV and iface.type is InterfaceType.DIRECT:
            src = getattr(iface.source, "dev", "")
            return err(nc.SOURCE_DEV_MISSING, f"source device {src} does not exist",
                       "name an existing link in <source dev='...'/>")
        if code in (errno.EACCES, errno.ENOENT, errno.ENOTTY):
            return err(nc.TUN_NODE_INACCESSIBLE, f"cannot use tun node {tun_node}: {text}",
                       "pass --tun-node with a node for the tun clone device (c 10 200)")
    return err(nc.HOST_ERROR, f"the kernel refused: {text} (errno {code})",
               "check the device with: ip -d link show " + (dev or ""))
