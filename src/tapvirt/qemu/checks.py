"""Pre-flight checks of one interface against what the host says about its devices. PURE.

`check_interface(iface, facts)` looks only at data: the `Interface` from the definition
and the `Facts` that `tapvirt.qemu.connect.gather_facts` read from the host (link
lookups, device-node status, tap holders, who we are). It returns findings; it never
opens, creates or changes anything, so `tapvirt check` and `start` share it and the
golden tests run it on a fake host.

Each finding names the interface (alias and MAC), the device, the cause, and the exact
fix, usually the `ip` command the privileged side must run, since an unprivileged
launcher cannot change a device itself (kernel-facts §3).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tapvirt import netcodes as nc
from tapvirt.conf.model import Interface, InterfaceType
from tapvirt.errors import ErrorCode, TapvirtError
from tapvirt.host.api import Identity, LinkInfo, LinkKind, NodeStatus

TUN_RDEV = (10, 200)
DEFAULT_TUN_NODE = "/dev/net/tun"
DEFAULT_MTU = 1500
IFNAMSIZ = 16
IFF_LOWER_UP = 0x10000


@dataclass(frozen=True)
class Facts:
    """Everything the checks of one interface need to know about the host, read-only."""

    identity: Identity
    user: str  # how fixes name us: the user name, or the uid when it has none
    link: LinkInfo | None = None  # <target dev>, when one is named
    tun_node_path: str = DEFAULT_TUN_NODE
    tun_node: NodeStatus | None = None  # status of tun_node_path
    macvtap_node_path: str | None = None  # /dev/tap<ifindex> when `link` is a macvtap
    macvtap_node: NodeStatus | None = None
    holders: tuple[int, ...] = ()  # pids holding `link` (taps)
    source: LinkInfo | None = None  # the bridge (type bridge) or lower device (type direct)
    not_local: tuple[str, ...] = ()  # socket types: addresses QEMU would bind but cannot


@dataclass(frozen=True)
class Finding:
    """One problem (or warning) of one interface."""

    code: ErrorCode
    interface: str  # "net0 (52:54:00:11:11:11)"
    device: str | None
    cause: str
    fix: str

    @property
    def warning(self) -> bool:
        return self.code.warning

    @property
    def subject(self) -> str:
        return f"interface {self.interface}"

    @property
    def message(self) -> str:
        return f"{self.subject}: {self.cause}"

    def error(self) -> TapvirtError:
        details = {"device": self.device} if self.device else {}
        return TapvirtError(self.code, self.subject, self.cause, self.fix, details=details)

    def to_json(self) -> dict[str, Any]:
        return {
            "code": self.code.code,
            "severity": "warning" if self.warning else "error",
            "device": self.device,
            "message": self.message,
            "fix": self.fix,
        }


def label(iface: Interface) -> str:
    """How messages name an interface: its alias (if any) and its MAC."""
    return f"{iface.alias} ({iface.mac})" if iface.alias else iface.mac


def invalid_name_reason(name: str) -> str | None:
    """Why `name` is not a valid Linux interface name (the kernel's dev_valid_name), or None."""
    if not name:
        return "it is empty"
    if len(name.encode()) >= IFNAMSIZ:
        return f"it is {len(name.encode())} bytes long; the kernel allows at most 15"
    if name in (".", ".."):
        return f"{name!r} is reserved"
    for ch in name:
        if ch in "/:" or ch.isspace():
            return f"it contains {ch!r}"
    return None


def check_interface(iface: Interface, facts: Facts) -> list[Finding]:
    """All findings for one interface, errors and warnings, in a stable order."""
    out = _Collector(iface)
    names = [("target dev", iface.dev)]
    if iface.source is not None:
        names.append(("source", getattr(iface.source, "bridge", None)
                      or getattr(iface.source, "dev", None)))
    for what, name in names:
        if name is not None and (reason := invalid_name_reason(name)) is not None:
            out.add(nc.INVALID_NAME, name, f"{what} {name!r} is not a valid interface name: "
                    f"{reason}", "choose a name of 1-15 bytes without '/', ':' or whitespace")
    if out.findings:
        return out.findings
    for address in facts.not_local:
        out.add(nc.ADDRESS_NOT_LOCAL, address,
                f"{iface.type} interface: QEMU would bind its socket to {address}, which no "
                "interface of this host (network namespace) has: it would not start",
                "use an address of this host (127.0.0.1 for guests on this host)"
                + (", or leave the address out to listen on every address"
                   if iface.type is InterfaceType.SERVER else " in <local address=...>"))
    if iface.type.hostless:
        return out.findings
    if iface.type is InterfaceType.ETHERNET and iface.unmanaged:
        _check_unmanaged(iface, facts, out)
    elif iface.type is InterfaceType.ETHERNET:
        _check_managed_tap(iface, facts, out)
    elif iface.type is InterfaceType.BRIDGE:
        _check_bridge(iface, facts, out)
    elif iface.type is InterfaceType.DIRECT:
        _check_direct(iface, facts, out)
    return out.findings


class _Collector:
    def __init__(self, iface: Interface) -> None:
        self.iface = iface
        self.label = label(iface)
        self.findings: list[Finding] = []

    def add(self, code: ErrorCode, device: str | None, cause: str, fix: str) -> None:
        self.findings.append(Finding(code, self.label, device, cause, fix))


def _tuntap_add(name: str, facts: Facts, queues: int) -> str:
    mq = " multi_queue" if queues > 1 else ""
    return f"ip tuntap add mode tap user {facts.user}{mq} name {name} && ip link set {name} up"


def _check_unmanaged(iface: Interface, facts: Facts, out: _Collector) -> None:
    name = iface.dev
    assert name is not None  # conf: managed='no' requires dev
    link = facts.link
    create = _tuntap_add(name, facts, iface.queues)
    if link is None:
        out.add(nc.DEVICE_MISSING, name, f"device {name} does not exist",
                f"create it as root: {create}")
        return
    if link.kind is LinkKind.MACVTAP:
        _check_macvtap(iface, link, facts, out)
        return
    if link.kind is not LinkKind.TAP or link.tun is None:
        what = {
            LinkKind.TUN: "a tun device in TUN (layer 3) mode",
            LinkKind.BRIDGE: "a bridge",
            LinkKind.VETH: "a veth",
        }.get(link.kind, f"a link of kind {link.kind_name or 'none'!r}")
        if link.kind is LinkKind.BRIDGE:
            fix = (f"to attach the guest to bridge {name}, use <interface type='bridge'> with "
                   f"<source bridge='{name}'/>, or create a tap on it as root: "
                   f"ip tuntap add mode tap user {facts.user} name TAP && "
                   f"ip link set TAP master {name} up")
        else:
            fix = f"replace it with a tap as root: ip link del {name} && {create}"
        out.add(nc.DEVICE_WRONG_KIND, name,
                f"device {name} is {what}, not a tap or macvtap", fix)
        return
    tun = link.tun
    _check_tun_node(facts, out, name)
    ident = facts.identity
    if not ident.net_admin and not _may_attach(tun.owner, tun.group, ident):
        owner = _describe_owner(tun.owner, tun.group)
        out.add(nc.DEVICE_FOREIGN_OWNER, name,
                f"tap {name} belongs to {owner}, not to uid {ident.uid} or one of its groups, "
                "so the kernel refuses to attach (EPERM)",
                f"recreate it for this user as root: ip link del {name} && {create}")
    if tun.multi_queue and iface.queues == 1:
        out.add(nc.QUEUES_MISMATCH, name,
                f"tap {name} is multi_queue but the interface asks for 1 queue; "
                "the kernel refuses the attach (EINVAL)",
                f"set <driver queues='N'/> with N>1, or recreate it without multi_queue as root: "
                f"ip link del {name} && {create}")
    elif not tun.multi_queue and iface.queues > 1:
        out.add(nc.QUEUES_MISMATCH, name,
                f"tap {name} is single-queue but <driver queues='{iface.queues}'/> needs "
                "a multi_queue tap; the kernel refuses the attach (EINVAL)",
                f"recreate it as root: ip link del {name} && {create}, "
                "or remove <driver queues>")
    elif not tun.multi_queue and (facts.holders or attached(link)):
        holder = (f"process {', '.join(map(str, facts.holders))}" if facts.holders
                  else "another process (not visible to us)")
        out.add(nc.DEVICE_BUSY, name,
                f"single-queue tap {name} is already attached by {holder} (EBUSY)",
                "stop the process that holds it (another guest?), or give this guest its own "
                f"tap: {_tuntap_add('TAP', facts, iface.queues)}")
    if link.mac == iface.mac:
        out.add(nc.MAC_CONFLICT, name,
                f"tap {name} carries the guest's own MAC {iface.mac}: the host would drop the "
                "guest's frames as looped back",
                f"give the tap another MAC as root: ip link set {name} address "
                f"{managed_tap_mac(iface.mac)}")
    _check_mtu(iface, link, out)
    _check_up(link, out)


def attached(link: LinkInfo) -> bool:
    """Whether the kernel says some fd is attached to this tap. Netlink reports the queue
    count only for multi_queue taps; for a single-queue tap the host layer derives it from
    the carrier, which the tun driver raises on attach and which netlink reports also while
    the tap is DOWN (tapvirt.host.links.tun_info)."""
    tun = link.tun
    if tun is None:
        return False
    return tun.num_queues > 0 or (link.up and bool(link.flags & IFF_LOWER_UP))


def may_be_attached(link: LinkInfo) -> bool:
    """Worth the /proc scan that names a holder: only when the kernel says it is attached.
    An idle tap's connect then costs no second netlink round trip (bench/connect.py)."""
    return attached(link)


def _check_macvtap(iface: Interface, link: LinkInfo, facts: Facts, out: _Collector) -> None:
    name = link.name
    node = facts.macvtap_node_path or f"/dev/tap{link.ifindex}"
    status = facts.macvtap_node
    chown = f"chown {facts.user} {node}"
    if status is None:
        out.add(nc.MACVTAP_NODE_MISSING, name,
                f"macvtap {name} has no device node {node} in this view of /dev "
                "(ifindex collisions across namespaces, or no devtmpfs)",
                f"as root, in the macvtap's namespace: mknod {node} c "
                f"$(cat /sys/class/net/{name}/macvtap/tap{link.ifindex}/dev | tr : ' ') && "
                f"{chown}")
    elif (not status.is_char_device
          or (link.macvtap_dev is not None and status.rdev != link.macvtap_dev)):
        want = _rdev(link.macvtap_dev) if link.macvtap_dev else "the macvtap's"
        got = _rdev(status.rdev) if status.is_char_device else "not a character device"
        out.add(nc.MACVTAP_NODE_FOREIGN, name,
                f"{node} belongs to another device ({got}, expected {want}): "
                "/dev/tapN names collide across network namespaces",
                f"as root, make a private node for it: mknod PATH c {want.replace(':', ' ')} "
                f"&& chown {facts.user} PATH, and name it in <backend tap='PATH'/>")
    elif not status.readable_writable:
        out.add(nc.MACVTAP_NODE_FOREIGN, name,
                f"{node} (uid {status.uid}, mode {status.mode:o}) is not readable and "
                f"writable by uid {facts.identity.uid}",
                f"as root: {chown}")
    if link.mac != iface.mac:
        out.add(nc.MAC_MISMATCH, name,
                f"macvtap {name} has MAC {link.mac} but the guest uses {iface.mac}: "
                "the macvtap would drop the guest's unicast traffic",
                f"as root: ip link set {name} address {iface.mac}, or use "
                f"<mac address='{link.mac}'/>")
    _check_mtu(iface, link, out)
    _check_up(link, out)


def _check_tun_node(facts: Facts, out: _Collector, device: str) -> None:
    path = facts.tun_node_path
    st = facts.tun_node
    node_fix = (f"as root, give this user a private tun node: mknod -m 0600 NODE c 10 200 && "
                f"chown {facts.user} NODE, then pass --tun-node NODE "
                "(or make /dev/net/tun mode 0666)")
    if st is None:
        out.add(nc.TUN_NODE_INACCESSIBLE, device, f"tun node {path} does not exist", node_fix)
    elif not st.is_char_device or st.rdev != TUN_RDEV:
        what = _rdev(st.rdev) if st.is_char_device else "not a character device"
        out.add(nc.TUN_NODE_INACCESSIBLE, device,
                f"tun node {path} is not the tun clone device 10:200 ({what})", node_fix)
    elif not st.readable_writable:
        out.add(nc.TUN_NODE_INACCESSIBLE, device,
                f"tun node {path} (uid {st.uid}, mode {st.mode:o}) is not readable and "
                f"writable by uid {facts.identity.uid} (EACCES)", node_fix)


def _check_mtu(iface: Interface, link: LinkInfo, out: _Collector) -> None:
    if iface.mtu is not None and iface.mtu > link.mtu:
        out.add(nc.MTU_TOO_LARGE, link.name,
                f"the guest MTU {iface.mtu} is above the MTU {link.mtu} of {link.name}",
                f"as root: ip link set {link.name} mtu {iface.mtu}, or lower <mtu size>")


def _check_up(link: LinkInfo, out: _Collector) -> None:
    if not link.up:
        out.add(nc.DEVICE_DOWN, link.name,
                f"{link.name} is administratively down: the guest's frames would fail (EIO)",
                f"as root: ip link set {link.name} up")


def _needs_privilege(iface: Interface, facts: Facts, out: _Collector, what: str) -> bool:
    if facts.identity.net_admin:
        return False
    name = iface.dev or "mytap0"
    out.add(nc.MANAGED_NEEDS_PRIVILEGE, iface.dev,
            f"{what} needs CAP_NET_ADMIN, which uid {facts.identity.uid} does not have",
            f"precreate the device as root ({_tuntap_add(name, facts, iface.queues)}) and use "
            f"<interface type='ethernet'> with <target dev='{name}' managed='no'/>")
    return True


def _check_exists(iface: Interface, facts: Facts, out: _Collector) -> None:
    if iface.dev is not None and facts.link is not None:
        out.add(nc.DEVICE_EXISTS, iface.dev,
                f"The {iface.dev} interface already exists: a managed device is always created "
                "new",
                f"add managed='no' to <target dev='{iface.dev}'/> to use the existing device, "
                "or choose another name")


def _check_managed_tap(iface: Interface, facts: Facts, out: _Collector) -> None:
    if _needs_privilege(iface, facts, out, "creating a managed tap"):
        return
    _check_exists(iface, facts, out)
    _check_tun_node(facts, out, iface.dev or "vnetN")


def _check_bridge(iface: Interface, facts: Facts, out: _Collector) -> None:
    bridge = getattr(iface.source, "bridge", None)
    assert bridge is not None  # conf: type='bridge' requires <source bridge>
    if facts.source is None:
        out.add(nc.BRIDGE_MISSING, bridge, f"bridge {bridge} does not exist",
                f"create it as root: ip link add {bridge} type bridge && "
                f"ip link set {bridge} up")
        return
    if facts.source.kind is not LinkKind.BRIDGE:
        out.add(nc.DEVICE_WRONG_KIND, bridge,
                f"{bridge} is a {facts.source.kind_name or facts.source.kind.value}, "
                "not a bridge", "name a bridge in <source bridge='...'/>")
        return
    if facts.identity.net_admin:
        _check_exists(iface, facts, out)
        _check_tun_node(facts, out, iface.dev or "vnetN")
    elif iface.queues > 1:
        out.add(nc.QUEUES_MISMATCH, bridge,
                f"without CAP_NET_ADMIN tapvirt joins bridge {bridge} through "
                f"qemu-bridge-helper, which gives one queue, not {iface.queues}",
                "remove <driver queues>, or precreate a multi_queue tap on the bridge as root "
                f"({_tuntap_add('TAP', facts, iface.queues)} && ip link set TAP master "
                f"{bridge}) and use it with managed='no'")


def _check_direct(iface: Interface, facts: Facts, out: _Collector) -> None:
    src = getattr(iface.source, "dev", None)
    assert src is not None  # conf: type='direct' requires <source dev>
    if not facts.identity.net_admin:
        name = iface.dev or "macvtap0"
        out.add(nc.MANAGED_NEEDS_PRIVILEGE, iface.dev,
                f"creating a macvtap on {src} needs CAP_NET_ADMIN, which uid "
                f"{facts.identity.uid} does not have",
                f"precreate it as root: ip link add link {src} name {name} type macvtap mode "
                f"bridge && ip link set {name} address {iface.mac} up && chown {facts.user} "
                f"/dev/tap$(cat /sys/class/net/{name}/ifindex), then use "
                f"<interface type='ethernet'> with <target dev='{name}' managed='no'/>")
        return
    if facts.source is None:
        out.add(nc.SOURCE_DEV_MISSING, src, f"source device {src} does not exist",
                "name an existing link in <source dev='...'/> (ip link show)")
        return
    _check_exists(iface, facts, out)


def _rdev(rdev: tuple[int, int]) -> str:
    return f"{rdev[0]}:{rdev[1]}"


def _may_attach(owner: int | None, group: int | None, ident: Identity) -> bool:
    """The kernel's tun_not_capable(), inverted: owner or group match, or neither set."""
    if owner is None and group is None:
        return True
    if owner is not None and owner == ident.uid:
        return True
    return group is not None and group in ident.gids


def _describe_owner(owner: int | None, group: int | None) -> str:
    parts = []
    if owner is not None:
        parts.append(f"uid {owner}")
    if group is not None:
        parts.append(f"group {group}")
    return " and ".join(parts)


def managed_tap_mac(guest_mac: str) -> str:
    """The MAC of a tap tapvirt creates: the guest MAC with first octet FE (FA if it is FE),
    so the host never sees the guest's own address on its side (libvirt does the same)."""
    first, rest = guest_mac.split(":", 1)
    return ("fa:" if first.lower() == "fe" else "fe:") + rest.lower()


def effective_host_mtu(iface: Interface, device_mtu: int | None) -> int | None:
    """The MTU to tell a virtio guest: <mtu> if given, else the device's when it is not the
    default, so guest and host agree without the launcher touching the device."""
    if iface.mtu is not None:
        return iface.mtu
    if device_mtu is not None and device_mtu != DEFAULT_MTU:
        return device_mtu
    return None
