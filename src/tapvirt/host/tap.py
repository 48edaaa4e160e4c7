"""Attach to an existing tap (unprivileged) and create managed taps (CAP_NET_ADMIN).

The attach path never changes the device: no MAC, MTU, IFF_UP, persist or owner. The
one device-wide effect it cannot avoid is the kernel's: TUNSETIFF records the requested
IFF_VNET_HDR in the tap's flags (kernel-facts §6), exactly as QEMU and libvirt do.
Kernel errno values are mapped onto tapvirt's network codes, never shown raw.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from collections.abc import Callable

from tapvirt.errors import TapvirtError
from tapvirt.host import tunioctl as t
from tapvirt.host.api import IFF_UP, LinkInfo, LinkKind, OwnedFds
from tapvirt.host.links import parse_mac, validate_ifname
from tapvirt.host.netlink import IFLA_ADDRESS, IFLA_MASTER, IFLA_MTU, RtNetlink, attr, attr_u32
from tapvirt.host.procfs import tap_holders
from tapvirt.host.tapguard import only_our_queues, raced_error
from tapvirt.netcodes import (
    BRIDGE_MISSING,
    DEVICE_BUSY,
    DEVICE_EXISTS,
    DEVICE_FOREIGN_OWNER,
    DEVICE_MISSING,
    DEVICE_WRONG_KIND,
    HOST_ERROR,
    MANAGED_NEEDS_PRIVILEGE,
    MTU_TOO_LARGE,
    QUEUES_MISMATCH,
    TUN_NODE_INACCESSIBLE,
)

Lookup = Callable[[str], LinkInfo | None]

DEFAULT_TUN_NODE = "/dev/net/tun"
MAX_TAP_MTU = 65521  # kernel-facts §7
MAX_GENERATED = 10000  # like libvirt: vnet0 .. vnet9999


def attach_flags(vnet_hdr: bool, queues: int) -> int:
    flags = t.IFF_TAP | t.IFF_NO_PI
    if vnet_hdr:
        flags |= t.IFF_VNET_HDR
    if queues > 1:
        flags |= t.IFF_MULTI_QUEUE
    return flags


def tuntap_add_cmd(name: str, uid: int, queues: int) -> str:
    mq = " multi_queue" if queues > 1 else ""
    return f"ip tuntap add dev {name} mode tap user {uid}{mq} && ip link set {name} up"


def open_tun_node(path: str) -> int:
    """Open the tun clone device read-write, close-on-exec; tun-node-inaccessible if not."""
    fix_node = (f"use a private node the privileged side made for this user: "
                f"mknod -m 0600 {path} c 10 200 && chown {os.getuid()} {path} "
                f"(on a filesystem not mounted nodev), or chmod 0666 /dev/net/tun")
    try:
        fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
    except FileNotFoundError:
        raise TapvirtError(TUN_NODE_INACCESSIBLE, path,
                           f"the tun clone device {path} does not exist", fix_node) from None
    except PermissionError as e:
        raise TapvirtError(
            TUN_NODE_INACCESSIBLE, path,
            f"cannot open {path} read-write ({e.strerror}): {_node_desc(path)}",
            fix_node) from None
    except OSError as e:
        raise TapvirtError(
            TUN_NODE_INACCESSIBLE, path,
            f"cannot open {path} ({e.strerror}): is the tun driver available?",
            "load the tun module (modprobe tun) or give the right node: c 10 200") from None
    st = os.fstat(fd)
    if not stat.S_ISCHR(st.st_mode) or (os.major(st.st_rdev),
                                        os.minor(st.st_rdev)) != t.TUN_CLONE_DEV:
        os.close(fd)
        raise TapvirtError(TUN_NODE_INACCESSIBLE, path,
                           f"{path} is not the tun clone device (c 10 200)", fix_node)
    return fd


def _node_desc(path: str) -> str:
    try:
        st = os.stat(path)
    except OSError:
        return "its directory is not searchable"
    return (f"it is owned by uid {st.st_uid} gid {st.st_gid} with mode "
            f"{stat.S_IMODE(st.st_mode):04o}, we are uid {os.getuid()}")


def open_tap(name: str, *, tun_node: str, vnet_hdr: bool, queues: int,
             lookup: Lookup, net_admin: bool = False) -> OwnedFds:
    """Attach to the existing tap `name`: one fd per queue. `lookup` explains failures."""
    validate_ifname(name)
    if queues < 1:
        raise ValueError(f"queues must be at least 1, not {queues}")
    if net_admin:
        # With CAP_NET_ADMIN, TUNSETIFF on a missing name CREATES a tap instead of
        # failing with EPERM: make sure an unmanaged device really exists first.
        info = lookup(name)
        if info is None:
            raise _attach_error(name, OSError(errno.EPERM, "missing"), queues, lookup)
        if info.kind is not LinkKind.TAP:
            raise wrong_kind_error(info)
    flags = attach_flags(vnet_hdr, queues)
    with OwnedFds() as owned:
        for _ in range(queues):
            fd = open_tun_node(tun_node)
            owned.add(fd)
            try:
                t.set_iff(fd, name, flags)
            except OSError as e:
                raise _attach_error(name, e, queues, lookup) from None
            try:
                got, got_flags = t.get_iff(fd)
                t.reset_fd_state(fd)
            except OSError as e:
                raise _ioctl_error(name, e) from None
            if got != name or not got_flags & t.IFF_TAP:
                raise TapvirtError(HOST_ERROR, f"tap {name}",
                                   f"after attaching, the fd reports device {got!r} "
                                   f"with flags {got_flags:#x}", "report this as a bug")
        return OwnedFds(owned.release())


def _attach_error(name: str, e: OSError, queues: int, lookup: Lookup) -> TapvirtError:
    subject = f"tap {name}"
    uid = os.getuid()
    if e.errno == errno.EBUSY:
        return busy_error(name)
    if e.errno not in (errno.EPERM, errno.EINVAL):
        return TapvirtError(HOST_ERROR, subject, f"attaching failed: {e.strerror}",
                            "check the device with: ip -d link show dev " + name)
    info = lookup(name)
    if info is None:
        return TapvirtError(DEVICE_MISSING, f"device {name}",
                            f"there is no device {name} in this network namespace",
                            "have the privileged side create it: "
                            + tuntap_add_cmd(name, uid, queues))
    if info.kind is not LinkKind.TAP:
        return wrong_kind_error(info)
    if e.errno == errno.EPERM:
        return foreign_owner_error(info, uid, set(os.getgroups()) | {os.getgid()}, queues)
    assert info.tun is not None
    if info.tun.multi_queue != (queues > 1):
        return queues_mismatch_error(info, queues)
    return TapvirtError(HOST_ERROR, subject, f"the kernel refused the attach ({e.strerror})",
                        "check the device with: ip -d link show dev " + name)


def _ioctl_error(name: str, e: OSError) -> TapvirtError:
    return TapvirtError(HOST_ERROR, f"tap {name}",
                        f"setting up the attached fd failed: {e.strerror}",
                        "report this as a bug, with: ip -d link show dev " + name)


def busy_error(name: str) -> TapvirtError:
    holders = tap_holders(name)
    if holders:
        who = ", ".join(f"pid {p} ({_comm(p)})" for p in holders)
        cause = f"the single-queue tap {name} is already attached by {who}"
        fix = f"stop {who} or give this guest another tap"
    else:
        cause = (f"the single-queue tap {name} is already attached by a process "
                 f"we cannot see (another user's)")
        fix = "find it as root: grep -l 'iff:.*" + name + "' /proc/*/fdinfo/*; stop it"
    return TapvirtError(DEVICE_BUSY, f"tap {name}", cause, fix,
                        details={"holders": list(holders)})


def _comm(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/comm", encoding="utf-8", errors="replace") as f:
            return f.read().strip()
    except OSError:
        return "?"


def wrong_kind_error(info: LinkInfo) -> TapvirtError:
    what = {
        LinkKind.TUN: "a TUN-mode (layer 3) tun device, which cannot carry Ethernet frames",
        LinkKind.MACVTAP: "a macvtap, which is opened through /dev/tap<ifindex>",
        LinkKind.BRIDGE: "a bridge",
        LinkKind.VETH: "a veth",
    }.get(info.kind, f"a device of kind {info.kind_name or 'none'!r}")
    return TapvirtError(
        DEVICE_WRONG_KIND, f"device {info.name}", f"{info.name} is {what}, not a tap",
        f"name a tap (ip tuntap add dev NAME mode tap user {os.getuid()}) in <target dev>")


def foreign_owner_error(info: LinkInfo, uid: int, gids: set[int], queues: int) -> TapvirtError:
    assert info.tun is not None
    owner, group = info.tun.owner, info.tun.group
    parts = []
    # The kernel (tun_not_capable) requires BOTH to match when both are set.
    if owner is not None and owner != uid:
        parts.append(f"is owned by uid {owner} (we are uid {uid})")
    if group is not None and group not in gids:
        parts.append(f"belongs to group {group} (we are in {sorted(gids)})")
    if not parts:
        parts.append("refuses us although owner and group match")
    return TapvirtError(
        DEVICE_FOREIGN_OWNER, f"tap {info.name}", f"tap {info.name} " + " and ".join(parts),
        f"have the privileged side recreate it for uid {uid}: ip link del {info.name} && "
        + tuntap_add_cmd(info.name, uid, queues),
        details={"owner": owner, "group": group})


def queues_mismatch_error(info: LinkInfo, queues: int) -> TapvirtError:
    assert info.tun is not None
    if info.tun.multi_queue:
        cause = (f"tap {info.name} is multi_queue but the interface asks for 1 queue "
                 f"(a multi_queue tap needs <driver queues='N'/> with N > 1)")
        fix = (f"set <driver queues='2'/> or more, or recreate {info.name} without "
               f"multi_queue: ip link del {info.name} && "
               + tuntap_add_cmd(info.name, os.getuid(), 1))
    else:
        cause = (f"tap {info.name} is single-queue but the interface asks for "
                 f"{queues} queues")
        fix = (f"drop <driver queues>, or recreate {info.name} with multi_queue: "
               f"ip link del {info.name} && " + tuntap_add_cmd(info.name, os.getuid(), queues))
    return TapvirtError(QUEUES_MISMATCH, f"tap {info.name}", cause, fix)


# -- managed taps (CAP_NET_ADMIN) ----------------------------------------------------------

def need_privilege(net_admin: bool, what: str) -> None:
    if not net_admin:
        raise TapvirtError(
            MANAGED_NEEDS_PRIVILEGE, what,
            f"creating {what} needs CAP_NET_ADMIN, which this process does not have",
            "precreate the device with tapvirt-prep (or ip) and use "
            "<target dev='NAME' managed='no'/>, or run with CAP_NET_ADMIN")


def create_tap(name: str | None, *, tun_node: str, mac: str, mtu: int | None,
               bridge: str | None, vnet_hdr: bool, queues: int, nl: RtNetlink,
               lookup: Lookup, net_admin: bool) -> tuple[str, OwnedFds]:
    """Create a NON-persistent tap (it vanishes with its last fd): `name` or the first
    free vnetN; set `mac`, the MTU (`mtu`, else the bridge's), IFF_UP; enslave it to
    `bridge`. Returns the name and one attached fd per queue."""
    need_privilege(net_admin, f"tap {name or 'vnetN'}")
    if name is not None:
        validate_ifname(name)
    if queues < 1:
        raise ValueError(f"queues must be at least 1, not {queues}")
    address = parse_mac(mac)
    br: LinkInfo | None = None
    if bridge is not None:
        validate_ifname(bridge)
        br = lookup(bridge)
        if br is None:
            raise TapvirtError(BRIDGE_MISSING, f"bridge {bridge}",
                               f"there is no bridge {bridge} in this network namespace",
                               f"create it: ip link add {bridge} type bridge && "
                               f"ip link set {bridge} up")
        if br.kind is not LinkKind.BRIDGE:
            raise TapvirtError(DEVICE_WRONG_KIND, f"bridge {bridge}",
                               f"{bridge} is a {br.kind_name or 'plain'} device, not a bridge",
                               "name a bridge in <source bridge='...'/>")
    if mtu is not None and mtu > MAX_TAP_MTU:
        raise TapvirtError(MTU_TOO_LARGE, f"tap {name or 'vnetN'}",
                           f"MTU {mtu} is above the tap maximum {MAX_TAP_MTU}",
                           f"use <mtu size='{MAX_TAP_MTU}'/> or less")
    flags = attach_flags(vnet_hdr, queues)
    with OwnedFds() as owned:
        born = _born_private(tun_node, queues, name, flags, owned=owned, lookup=lookup)
        if born is not None:
            return _configure(born[0], born[1], owned, mac=mac, address=address, mtu=mtu,
                              br=br, bridge=bridge, nl=nl)
        fd = open_tun_node(tun_node)
        owned.add(fd)
        actual = _create_first(fd, name, flags)
        try:
            # at once: until the owner is set, anyone with a tun node may attach a queue
            t.set_owner(fd, os.geteuid())
        except OSError as e:
            raise _ioctl_error(actual, e) from None
        try:
            for _ in range(queues - 1):
                fd = open_tun_node(tun_node)
                owned.add(fd)
                t.set_iff(fd, actual, flags)
            for fd in owned:
                t.reset_fd_state(fd)
        except OSError as e:
            raise _ioctl_error(actual, e) from None
        link = lookup(actual)
        if link is None:
            raise TapvirtError(HOST_ERROR, f"tap {actual}", "vanished right after creation",
                               "retry; report this if it persists")
        if not only_our_queues(link.tun, queues):
            # a queue attached in the instant before TUNSETOWNER keeps the tap alive
            # after our fds close: delete the device itself
            with contextlib.suppress(OSError):
                nl.del_link(index=link.ifindex)
            raise raced_error(actual)
        return _configure(actual, link, owned, mac=mac, address=address, mtu=mtu, br=br,
                          bridge=bridge, nl=nl)


def _configure(actual: str, link: LinkInfo, owned: OwnedFds, *, mac: str, address: bytes,
               mtu: int | None, br: LinkInfo | None, bridge: str | None,
               nl: RtNetlink) -> tuple[str, OwnedFds]:
    """MAC, MTU, master and UP in one RTM_NEWLINK; the fds handed over."""
    attrs = attr(IFLA_ADDRESS, address)
    use_mtu = mtu if mtu is not None else (br.mtu if br is not None else None)
    if use_mtu is not None:
        attrs += attr_u32(IFLA_MTU, use_mtu)
    if br is not None:
        attrs += attr_u32(IFLA_MASTER, br.ifindex)
    try:
        nl.new_link(index=link.ifindex, attrs=attrs, flags=IFF_UP, change=IFF_UP)
    except OSError as e:
        raise TapvirtError(HOST_ERROR, f"tap {actual}",
                           f"setting MAC {mac}, MTU {use_mtu}, master {bridge} and UP "
                           f"failed: {e.strerror}", "check the values and the bridge"
                           ) from None
    return actual, OwnedFds(owned.release())


CLONE_NEWNET = 0x40000000
IFLA_NET_NS_FD = 28


def _born_private(tun_node: str, queues: int, name: str | None, flags: int, *,
                  owned: OwnedFds, lookup: Lookup) -> tuple[str, LinkInfo] | None:
    """Create the tap where nobody else can attach to it (issue 13, item 2): in a fresh
    network namespace of this thread, which no other process can enter; there it gets
    its owner and all our queues, and only then moves into our namespace (EEXIST if the
    name was taken meanwhile: never a takeover). A netlink listener here first sees it
    already owned and full. None when this process may not make a namespace
    (unshare(CLONE_NEWNET) needs CAP_SYS_ADMIN: a launcher with only CAP_NET_ADMIN);
    the caller then owns the tap right after TUNSETIFF and detects a raced queue."""
    import ctypes

    from tapvirt.host.netlink import RtNetlink as _Nl

    libc = ctypes.CDLL(None, use_errno=True)
    home = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    private = _Nl()
    try:
        if libc.unshare(CLONE_NEWNET) != 0:
            if ctypes.get_errno() == errno.EPERM:
                return None
            raise TapvirtError(HOST_ERROR, "tap", "unshare(CLONE_NEWNET) failed: "
                               + os.strerror(ctypes.get_errno()), "check the kernel")
        try:
            fds = []
            for _ in range(queues):
                fds.append(open_tun_node(tun_node))
                owned.add(fds[-1])
            private._socket()  # bound to the private namespace
        finally:
            if libc.setns(home, CLONE_NEWNET) != 0:  # never carry on in the wrong one
                os.abort()
        candidates = [name] if name is not None else [
            f"vnet{n}" for n in range(MAX_GENERATED)]
        for candidate in candidates:
            if lookup(candidate) is not None:
                if name is not None:
                    raise _exists_error(candidate)
                continue
            break
        else:
            raise TapvirtError(HOST_ERROR, "tap vnetN",
                               f"no free name vnet0..vnet{MAX_GENERATED - 1}",
                               "name the tap in <target dev='...'/>")
        try:
            actual = t.set_iff(fds[0], candidate, flags | t.IFF_TUN_EXCL)
            t.set_owner(fds[0], os.geteuid())
            for fd in fds[1:]:
                t.set_iff(fd, actual, flags)
            for fd in fds:
                t.reset_fd_state(fd)
        except OSError as e:
            raise _ioctl_error(candidate, e) from None
        raw = private.get_link(name=actual)
        if raw is None:
            raise TapvirtError(HOST_ERROR, f"tap {actual}", "not visible after creation",
                               "retry; report this if it persists")
        try:
            private.new_link(index=raw.ifindex, attrs=attr_u32(IFLA_NET_NS_FD, home))
        except OSError as e:
            if e.errno == errno.EEXIST:
                raise _exists_error(actual) from None
            raise TapvirtError(HOST_ERROR, f"tap {actual}",
                               f"moving it into this namespace failed: {e.strerror}",
                               "check dmesg") from None
        link = lookup(actual)
        if link is None or not only_our_queues(link.tun, queues):
            raise raced_error(actual)
        return actual, link
    finally:
        private.close()
        os.close(home)


def _exists_error(name: str) -> TapvirtError:
    return TapvirtError(
        DEVICE_EXISTS, f"device {name}", f"a device called {name} already exists",
        f"remove <target dev='{name}'/> to get a free vnetN, or use "
        f"<target dev='{name}' managed='no'/> to attach to it")


def _create_first(fd: int, name: str | None, flags: int) -> str:
    """TUNSETIFF with IFF_TUN_EXCL: a real create, never an attach to an existing device."""
    candidates = [name] if name is not None else [f"vnet{n}" for n in range(MAX_GENERATED)]
    for candidate in candidates:
        try:
            return t.set_iff(fd, candidate, flags | t.IFF_TUN_EXCL)
        except OSError as e:
            if e.errno == errno.EBUSY and name is None:
                continue  # taken: try the next vnetN
            if e.errno == errno.EBUSY:
                raise TapvirtError(
                    DEVICE_EXISTS, f"device {name}", f"a device called {name} already exists",
                    f"remove <target dev='{name}'/> to get a free vnetN, or use "
                    f"<target dev='{name}' managed='no'/> to attach to it") from None
            if e.errno == errno.EPERM:
                need_privilege(False, f"tap {candidate}")
            raise TapvirtError(HOST_ERROR, f"tap {candidate}",
                               f"creating it failed: {e.strerror}", "check dmesg") from None
    raise TapvirtError(HOST_ERROR, "tap vnetN", f"no free name vnet0..vnet{MAX_GENERATED - 1}",
                       "name the tap in <target dev='...'/>")
