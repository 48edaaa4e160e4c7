"""Privileged host operations for tapvirt-prep: create, read, mark and delete devices.

Only tapvirt-prep (running as root) uses this module. Taps are created with raw ioctls
and IFF_TUN_EXCL (a name that exists is an error, never a takeover); everything else
is netlink through pyroute2 (`IPRoute`, never NDB), imported lazily. Device nodes are
made and chowned through fds opened with O_NOFOLLOW, so no symlink is ever followed.

Every operation acts on the network namespace the process is in: `enter_netns` moves
the (single-threaded) process first, before any tun node or netlink socket is opened,
because both bind their namespace at open time.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import os
import stat
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from tapvirt.errors import TapvirtError
from tapvirt.host.api import LinkInfo, LinkKind, TunInfo
from tapvirt.host.tapguard import only_our_queues, raced_error
from tapvirt.netcodes import (
    BRIDGE_MISSING,
    DEVICE_EXISTS,
    HOST_ERROR,
    SOURCE_DEV_MISSING,
)

TUNSETIFF = 0x400454CA
TUNSETPERSIST = 0x400454CB
TUNSETOWNER = 0x400454CC
TUNSETGROUP = 0x400454CE
IFF_TAP = 0x0002
IFF_MULTI_QUEUE = 0x0100
IFF_NO_PI = 0x1000
IFF_VNET_HDR = 0x4000
IFF_TUN_EXCL = 0x8000
CLONE_NEWNS = 0x00020000
CLONE_NEWNET = 0x40000000
NS_GET_NSTYPE = 0xB703
MS_REC = 0x4000
MS_SLAVE = 1 << 19
MNT_DETACH = 2
NETNS_DIR = "/run/netns"
MARK = "tapvirt-prep:v1"  # IFLA_IFALIAS prefix of every device tapvirt-prep created


# ---------------------------------------------------------------- namespaces
def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)


def _check(ret: int, what: str) -> None:
    if ret != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def open_netns(name: str) -> int:
    """An fd of /run/netns/NAME, verified to be a network namespace (FileNotFoundError if
    there is no such namespace). The name must have been validated (no '/')."""
    fd = os.open(os.path.join(NETNS_DIR, name), os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        kind = fcntl.ioctl(fd, NS_GET_NSTYPE)
    except OSError:
        os.close(fd)
        raise FileNotFoundError(errno.ENOENT, "not a namespace file", name) from None
    if kind != CLONE_NEWNET:
        os.close(fd)
        raise FileNotFoundError(errno.ENOENT, "not a network namespace", name)
    return fd


def enter_netns(name: str) -> None:
    """Move this process into network namespace NAME (call before any thread starts)."""
    fd = open_netns(name)
    try:
        _check(_libc().setns(fd, CLONE_NEWNET), f"setns({name})")
    finally:
        os.close(fd)


def private_sysfs() -> None:
    """Give this process its own mount namespace with a sysfs of its current netns.

    /sys shows the namespace of whoever mounted it (kernel-facts §8), and the macvtap
    char device number must be read inside the device's own namespace."""
    libc = _libc()
    _check(libc.unshare(CLONE_NEWNS), "unshare(CLONE_NEWNS)")
    _check(libc.mount(None, b"/", None, MS_REC | MS_SLAVE, None), "mount --make-rslave /")
    libc.umount2(b"/sys", MNT_DETACH)  # may not be a mount point: then just mount over it
    _check(libc.mount(b"sysfs", b"/sys", b"sysfs", 0, None), "mount sysfs /sys")


def remount_sysfs() -> None:
    """Mount a fresh sysfs of the current netns over /sys (after private_sysfs, when
    the process has moved to another namespace)."""
    libc = _libc()
    libc.umount2(b"/sys", MNT_DETACH)
    _check(libc.mount(b"sysfs", b"/sys", b"sysfs", 0, None), "mount sysfs /sys")


def return_to_netns(fd: int) -> None:
    """setns() back to the namespace `fd` (an fd of /proc/self/ns/net) refers to."""
    _check(_libc().setns(fd, CLONE_NEWNET), "setns(back)")


# ---------------------------------------------------------------- reading links
@dataclass(frozen=True)
class AdminLink:
    info: LinkInfo
    alias: str | None

    @property
    def mark(self) -> dict[str, str] | None:
        """The key=value fields of tapvirt-prep's mark, or None if it did not create it."""
        return parse_mark(self.alias)


def make_mark(fields: dict[str, str]) -> str:
    return " ".join([MARK, *(f"{k}={v}" for k, v in fields.items())])


def parse_mark(alias: str | None) -> dict[str, str] | None:
    if not alias or (not alias.startswith(MARK + " ") and alias != MARK):
        return None
    out: dict[str, str] = {}
    for part in alias.split()[1:]:
        key, _, value = part.partition("=")
        out[key] = value
    return out


_KINDS = {"macvtap": LinkKind.MACVTAP, "bridge": LinkKind.BRIDGE, "veth": LinkKind.VETH}


def _u32(value: Any) -> int | None:
    if value is None:
        return None
    v = int(value)
    return None if v in (-1, 0xFFFFFFFF) else v


class Admin:
    """A netlink session (pyroute2 IPRoute) in the current network namespace."""

    def __init__(self) -> None:
        from pyroute2 import IPRoute

        self._ipr: Any = IPRoute()

    def close(self) -> None:
        self._ipr.close()

    def __enter__(self) -> Admin:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- reading
    def _msg(self, **key: Any) -> Any | None:
        from pyroute2.netlink.exceptions import NetlinkError

        try:
            return self._ipr.link("get", **key)[0]
        except NetlinkError as exc:
            if exc.code in (errno.ENODEV, errno.ENOENT):
                return None
            raise _host_error(f"link {key}", exc) from None

    def _name_of(self, index: int | None, names: dict[int, str] | None) -> str | None:
        if not index:
            return None
        if names is not None:
            return names.get(index)
        msg = self._msg(index=index)
        return None if msg is None else str(msg.get_attr("IFLA_IFNAME"))

    def _convert(self, msg: Any, names: dict[int, str] | None = None) -> AdminLink:
        linkinfo = msg.get_attr("IFLA_LINKINFO")
        kind_name = ""
        data: dict[str, Any] = {}
        if linkinfo is not None:
            kind_name = linkinfo.get_attr("IFLA_INFO_KIND") or ""
            info_data = linkinfo.get_attr("IFLA_INFO_DATA")
            if info_data is not None and hasattr(info_data, "get"):
                attrs = info_data.get("attrs") or []
                data = {k: v for k, v in attrs if isinstance(k, str)}
        tun = None
        kind = _KINDS.get(kind_name, LinkKind.OTHER)
        if kind_name == "tun":
            kind = LinkKind.TAP if int(data.get("IFLA_TUN_TYPE", 2)) == IFF_TAP else LinkKind.TUN
            tun = TunInfo(
                owner=_u32(data.get("IFLA_TUN_OWNER")),
                group=_u32(data.get("IFLA_TUN_GROUP")),
                multi_queue=bool(data.get("IFLA_TUN_MULTI_QUEUE", 0)),
                vnet_hdr=bool(data.get("IFLA_TUN_VNET_HDR", 0)),
                persist=bool(data.get("IFLA_TUN_PERSIST", 0)),
                pi=bool(data.get("IFLA_TUN_PI", 0)),
                num_queues=int(data.get("IFLA_TUN_NUM_QUEUES", 0) or 0),
                num_disabled_queues=int(data.get("IFLA_TUN_NUM_DISABLED_QUEUES", 0) or 0),
            )
        mode = data.get("IFLA_MACVTAP_MODE")
        info = LinkInfo(
            name=str(msg.get_attr("IFLA_IFNAME")),
            ifindex=int(msg["index"]),
            kind=kind,
            kind_name=kind_name,
            flags=int(msg["flags"]),
            operstate=str(msg.get_attr("IFLA_OPERSTATE") or "unknown").lower(),
            mac=str(msg.get_attr("IFLA_ADDRESS") or "").lower(),
            mtu=int(msg.get_attr("IFLA_MTU") or 0),
            master=self._name_of(msg.get_attr("IFLA_MASTER"), names),
            link=self._name_of(msg.get_attr("IFLA_LINK"), names),
            tun=tun,
            macvtap_mode=str(mode) if mode is not None else None,
        )
        return AdminLink(info, msg.get_attr("IFLA_IFALIAS"))

    def get(self, name: str) -> AdminLink | None:
        msg = self._msg(ifname=name)
        return None if msg is None else self._convert(msg)

    def all_links(self) -> list[AdminLink]:
        msgs = list(self._ipr.get_links())
        names = {int(m["index"]): str(m.get_attr("IFLA_IFNAME")) for m in msgs}
        return [self._convert(m, names) for m in msgs]

    def attached(self, name: str) -> bool:
        """Whether some process holds tap NAME open (a guest runs on it).

        The tun driver turns the carrier on at the first attach and off after the last
        detach, whether the link is up or not; IFLA_TUN_NUM_QUEUES is reported only for
        multi-queue taps, so the carrier is the one signal for both kinds."""
        msg = self._msg(ifname=name)
        return msg is not None and bool(msg.get_attr("IFLA_CARRIER"))

    def index_of(self, name: str) -> int | None:
        found = self._ipr.link_lookup(ifname=name)
        return int(found[0]) if found else None

    # -- changing
    def set_link(self, index: int, **attrs: Any) -> None:
        from pyroute2.netlink.exceptions import NetlinkError

        try:
            self._ipr.link("set", index=index, **attrs)
        except NetlinkError as exc:
            raise _host_error(f"link #{index} ({', '.join(attrs)})", exc) from None

    def create_macvtap(self, name: str, *, link: str, mode: str, mac: str, alias: str) -> int:
        """Create macvtap NAME on LINK, marked with `alias`, and return its ifindex."""
        from pyroute2.netlink.exceptions import NetlinkError

        lower = self.index_of(link)
        if lower is None:
            raise TapvirtError(
                SOURCE_DEV_MISSING, f"--link {link}", "no such device in this namespace",
                f"name an existing link (ip link show {link})",
            )
        try:
            self._ipr.link("add", ifname=name, kind="macvtap", link=lower,
                           macvtap_mode=mode, address=mac)
        except NetlinkError as exc:
            if exc.code == errno.EEXIST:
                raise _exists(name) from None
            raise _host_error(f"macvtap {name} on {link}", exc) from None
        index = self.index_of(name)
        if index is None:
            raise TapvirtError(HOST_ERROR, f"macvtap {name}", "vanished right after creation")
        try:
            self.set_link(index, ifalias=alias)
        except TapvirtError:
            self.delete(index)
            raise
        return index

    def delete(self, index: int) -> None:
        from pyroute2.netlink.exceptions import NetlinkError

        try:
            self._ipr.link("del", index=index)
        except NetlinkError as exc:
            if exc.code != errno.ENODEV:
                raise _host_error(f"link #{index}", exc) from None

    def create_tap(
        self,
        name: str,
        *,
        uid: int | None,
        gid: int | None,
        multi_queue: bool,
        mac: str,
        mtu: int | None,
        bridge: str | None,
        alias: str,
        tun_node: str = "/dev/net/tun",
    ) -> int:
        """Create a persistent tap, fully configured, attachable only by uid/gid, or
        nothing at all; return its ifindex.

        Between TUNSETIFF and TUNSETOWNER a new tap has no owner, and the kernel lets
        anyone who can open a tun clone node in its namespace attach a queue to a
        multi-queue tap, a queue they keep after the owner is set. A temporary name does
        not close that: a netlink listener sees every new link at once (and wins the
        RTNL lock before our next ioctl). So the tap is born in a fresh network namespace
        of this process that nobody else can enter, gets its owner, group, mark, MAC and
        MTU there, and only then moves into this namespace (EEXIST if the name is taken
        here: never a takeover). Here it is checked to hold our one queue only (else it
        is deleted: `device-raced`), enslaved, set UP, checked again and made persistent
        last. Any failure deletes it."""
        if uid is None and gid is None:
            # a tap with neither owner nor group is attachable by every user, forever
            raise ValueError("create_tap needs an owner uid or a group gid")
        master = None
        if bridge is not None:
            master = self.index_of(bridge)
            if master is None:
                raise TapvirtError(
                    BRIDGE_MISSING, f"--bridge {bridge}", "no such bridge in this namespace",
                    f"create it: ip link add {bridge} type bridge && ip link set {bridge} up",
                )
        if self.index_of(name) is not None:
            raise _exists(name)
        flags = IFF_TAP | IFF_NO_PI | IFF_VNET_HDR | IFF_TUN_EXCL
        if multi_queue:
            flags |= IFF_MULTI_QUEUE
        with _born_private(tun_node) as (fd, private, home):
            try:
                fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH22x", name.encode(), flags))
                if uid is not None:
                    fcntl.ioctl(fd, TUNSETOWNER, uid)
                if gid is not None:
                    fcntl.ioctl(fd, TUNSETGROUP, gid)
            except OSError as exc:
                raise _host_error(f"tap {name}", exc) from None
            _private_setup(private, name, mac=mac, mtu=mtu, alias=alias, home=home)
            index = self.index_of(name)
            if index is None:
                raise TapvirtError(HOST_ERROR, f"tap {name}", "not visible after creation")
            try:
                self._check_only_our_queue(index, name)
                if master is not None:
                    self.set_link(index, master=master)
                self.set_link(index, state="up")
                self._check_only_our_queue(index, name)
                try:
                    fcntl.ioctl(fd, TUNSETPERSIST, 1)
                except OSError as exc:
                    raise _host_error(f"tap {name}: persist", exc) from None
            except BaseException:
                # closing our fd is not enough: another queue would keep the tap alive
                self.delete(index)
                raise
            return index

    def _check_only_our_queue(self, index: int, name: str) -> None:
        """The tap we hold must have exactly our one queue attached (and carrier)."""
        msg = self._msg(index=index)
        tun = None if msg is None else self._convert(msg, {}).info.tun
        if msg is None or not msg.get_attr("IFLA_CARRIER") or not only_our_queues(tun, 1):
            raise raced_error(name)


@contextlib.contextmanager
def _born_private(tun_node: str) -> Iterator[tuple[int, Any, int]]:
    """(a tun fd bound to a new network namespace only this process can reach, a netlink
    session in that namespace, an fd of the namespace we are in). The process itself
    stays in its namespace; the private one vanishes with the last of these fds."""
    from pyroute2 import IPRoute

    libc = _libc()
    home = os.open("/proc/self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    fd: int | None = None
    private: Any = None
    try:
        _check(libc.unshare(CLONE_NEWNET), "unshare(CLONE_NEWNET)")
        try:
            private = IPRoute()
            fd = os.open(tun_node, os.O_RDWR | os.O_CLOEXEC)
        finally:
            _check(libc.setns(home, CLONE_NEWNET), "setns(back)")
        yield fd, private, home
    finally:
        if fd is not None:
            os.close(fd)
        if private is not None:
            private.close()
        os.close(home)


def _private_setup(private: Any, name: str, *, mac: str, mtu: int | None, alias: str,
                   home: int) -> None:
    """Mark and configure the new tap in its private namespace, then move it home."""
    from pyroute2.netlink.exceptions import NetlinkError

    found = private.link_lookup(ifname=name)
    if not found:
        raise TapvirtError(HOST_ERROR, f"tap {name}", "not visible after creation")
    attrs: dict[str, Any] = {"ifalias": alias, "address": mac}
    if mtu is not None:
        attrs["mtu"] = mtu
    try:
        private.link("set", index=found[0], **attrs)
    except NetlinkError as exc:
        raise _host_error(f"tap {name} ({', '.join(attrs)})", exc) from None
    try:
        private.link("set", index=found[0], net_ns_fd=home)
    except NetlinkError as exc:
        if exc.code == errno.EEXIST:
            raise _exists(name) from None
        raise _host_error(f"tap {name}: move into this namespace", exc) from None


def _exists(name: str) -> TapvirtError:
    return TapvirtError(
        DEVICE_EXISTS, f"device {name}", "a device of that name appeared while creating it",
        "run the command again: an existing device is then compared with the request",
    )


def _host_error(what: str, exc: Exception) -> TapvirtError:
    code = getattr(exc, "code", None) or getattr(exc, "errno", None) or 0
    text = os.strerror(code) if code else str(exc)
    return TapvirtError(
        HOST_ERROR, what, f"the kernel refused: {text} (errno {code})",
        "check the device and the request (ip -d link show)",
        details={"errno": code},
    )


# ---------------------------------------------------------------- macvtap char devices
def macvtap_chardev(name: str, ifindex: int) -> tuple[int, int]:
    """The (major, minor) of macvtap NAME's char device, read from sysfs.

    sysfs must show the current namespace (see private_sysfs); the ifindex is compared
    to guard against a sysfs of another namespace."""
    base = f"/sys/class/net/{name}"
    with open(f"{base}/ifindex", encoding="ascii") as f:
        if int(f.read().strip()) != ifindex:
            raise OSError(errno.ESTALE, "sysfs shows another namespace's device", base)
    with open(f"{base}/macvtap/tap{ifindex}/dev", encoding="ascii") as f:
        major, minor = f.read().strip().split(":")
    return int(major), int(minor)


@dataclass(frozen=True)
class NodeState:
    rdev: tuple[int, int]
    uid: int
    gid: int
    mode: int


@contextlib.contextmanager
def _opath(path: str, dir_fd: int | None = None) -> Iterator[int]:
    fd = os.open(path, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)
    try:
        yield fd
    finally:
        os.close(fd)


def node_state(path: str) -> NodeState | None:
    """lstat() of a char device node; None if absent. Raises ValueError if the path is
    a symlink or anything but a char device."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return None
    if not stat.S_ISCHR(st.st_mode):
        raise ValueError(f"{path} is not a char device node")
    return NodeState((os.major(st.st_rdev), os.minor(st.st_rdev)), st.st_uid, st.st_gid,
                     stat.S_IMODE(st.st_mode))


def chown_node(path: str, rdev: tuple[int, int], uid: int, gid: int, mode: int) -> None:
    """Give a char device node to uid/gid, only if it is the device `rdev`.

    The node is pinned with O_PATH|O_NOFOLLOW and checked through that fd, then changed
    through /proc/self/fd: the inode we checked is the inode we change."""
    with _opath(path) as fd:
        st = os.fstat(fd)
        if not stat.S_ISCHR(st.st_mode) or (os.major(st.st_rdev), os.minor(st.st_rdev)) != rdev:
            raise ValueError(f"{path} is not char device {rdev[0]}:{rdev[1]}")
        proc = f"/proc/self/fd/{fd}"
        os.chown(proc, uid, gid)
        os.chmod(proc, mode)


def _safe_component(fd: int, final: bool) -> bool:
    st = os.fstat(fd)
    if st.st_uid != 0 or not stat.S_ISDIR(st.st_mode):
        return False
    writable_by_others = st.st_mode & 0o022
    return not writable_by_others or (not final and bool(st.st_mode & stat.S_ISVTX))


def open_node_dir(path: str) -> int:
    """Open (creating 0755 root-owned) the private node directory without following a
    symlink anywhere on the way; every component must belong to root and not be
    writable by others (a sticky intermediate like /tmp is fine)."""
    if not os.path.isabs(path):
        raise ValueError(f"{path} is not absolute")
    parts = [p for p in path.split("/") if p]
    if any(p in (".", "..") for p in parts):
        raise ValueError(f"{path} contains '.' or '..'")
    fd = os.open("/", os.O_DIRECTORY | os.O_RDONLY | os.O_CLOEXEC)
    try:
        for i, part in enumerate(parts):
            final = i == len(parts) - 1
            if not _safe_component(fd, final=False):
                raise ValueError(f"a directory above {part} is not root's or is writable")
            with contextlib.suppress(FileExistsError):
                os.mkdir(part, 0o755, dir_fd=fd)
            nxt = os.open(part, os.O_DIRECTORY | os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC,
                          dir_fd=fd)
            os.close(fd)
            fd = nxt
            if final and not _safe_component(fd, final=True):
                raise ValueError(f"{path} is not root's or is writable by others")
    except BaseException:
        os.close(fd)
        raise
    return fd


def nodev(dir_fd: int) -> bool:
    return bool(os.fstatvfs(dir_fd).f_flag & os.ST_NODEV)


def make_private_node(
    dir_fd: int, name: str, rdev: tuple[int, int], *, uid: int, gid: int, mode: int
) -> None:
    """mknod NAME (char rdev) in the node directory and give it to uid/gid. An existing
    char node of another device (left by a deleted macvtap) is replaced; anything else
    in the way is an error (ValueError)."""
    dev = os.makedev(*rdev)
    try:
        os.mknod(name, stat.S_IFCHR | 0o600, dev, dir_fd=dir_fd)
    except FileExistsError:
        st = os.lstat(name, dir_fd=dir_fd)
        if not stat.S_ISCHR(st.st_mode):
            raise ValueError(f"{name} exists and is not a char device node") from None
        if st.st_rdev != dev:
            os.unlink(name, dir_fd=dir_fd)
            os.mknod(name, stat.S_IFCHR | 0o600, dev, dir_fd=dir_fd)
    with _opath(name, dir_fd=dir_fd) as fd:
        st = os.fstat(fd)
        if not stat.S_ISCHR(st.st_mode) or st.st_rdev != dev:
            raise ValueError(f"{name} changed under us")
        proc = f"/proc/self/fd/{fd}"
        os.chown(proc, uid, gid)
        os.chmod(proc, mode)
