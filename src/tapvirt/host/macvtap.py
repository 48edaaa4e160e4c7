"""Open a macvtap's char device safely; create and delete managed macvtaps.

`/dev/tap<ifindex>` is shared by every network namespace while ifindex is per
namespace (kernel-facts §9): the node found under our ifindex may be another
namespace's macvtap, and opening it does not check the caller's namespace. So every
opened fd is checked: st_rdev must be our device's major:minor (read from a sysfs that
was verified to be ours, see links.macvtap_chardev) and TUNGETIFF must name it.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
import tempfile
import time

from tapvirt.errors import TapvirtError
from tapvirt.host import tunioctl as t
from tapvirt.host.api import IFF_UP, LinkInfo, LinkKind, OwnedFds
from tapvirt.host.links import parse_mac, validate_ifname
from tapvirt.host.netlink import (
    IFLA_ADDRESS,
    IFLA_IFNAME,
    IFLA_INFO_DATA,
    IFLA_INFO_KIND,
    IFLA_LINK,
    IFLA_LINKINFO,
    IFLA_MACVLAN_MODE,
    MACVLAN_MODES,
    RtNetlink,
    attr,
    attr_str,
    attr_u32,
    nested,
)
from tapvirt.host.tap import Lookup, need_privilege, wrong_kind_error
from tapvirt.netcodes import (
    DEVICE_EXISTS,
    HOST_ERROR,
    MACVTAP_NODE_FOREIGN,
    MACVTAP_NODE_MISSING,
    SOURCE_DEV_MISSING,
)

# libvirt waits for udev the same way (virNetDevMacVLanTapOpen): 10 x 20 ms.
OPEN_RETRIES = 10
OPEN_RETRY_DELAY = 0.02
MAX_GENERATED = 10000


def default_node(link: LinkInfo) -> str:
    return f"/dev/tap{link.ifindex}"


def _private_node_fix(link: LinkInfo, node: str) -> str:
    if link.macvtap_dev is None:
        return (f"as root inside this namespace: mknod -m 0600 NODE c $(cat "
                f"/sys/class/net/{link.name}/macvtap/tap{link.ifindex}/dev | tr : ' ') && "
                f"chown {os.getuid()} NODE, and pass NODE")
    major, minor = link.macvtap_dev
    return (f"have the privileged side make a private node: mknod -m 0600 {node}.priv "
            f"c {major} {minor} && chown {os.getuid()} {node}.priv, and use that node")


def _open_node(link: LinkInfo, node: str) -> int:
    delay_left = OPEN_RETRIES
    while True:
        try:
            return os.open(node, os.O_RDWR | os.O_CLOEXEC)
        except FileNotFoundError:
            # devtmpfs creates the node synchronously, udev-managed /dev a moment later.
            if delay_left == 0:
                raise TapvirtError(
                    MACVTAP_NODE_MISSING, f"macvtap {link.name}",
                    f"its char device node {node} does not exist (another namespace's "
                    f"macvtap with ifindex {link.ifindex} may hold that name)",
                    _private_node_fix(link, node)) from None
            delay_left -= 1
            time.sleep(OPEN_RETRY_DELAY)
        except PermissionError as e:
            try:
                st = os.stat(node)
                owner = f"owned by uid {st.st_uid} gid {st.st_gid} mode " \
                        f"{stat.S_IMODE(st.st_mode):04o}"
            except OSError:
                owner = "not accessible"
            raise TapvirtError(
                MACVTAP_NODE_FOREIGN, f"macvtap {link.name}",
                f"cannot open {node} read-write ({e.strerror}): it is {owner}, "
                f"we are uid {os.getuid()}",
                f"have the privileged side run: chown {os.getuid()} {node}") from None
        except OSError as e:
            if e.errno in (errno.ENXIO, errno.ENODEV):
                raise TapvirtError(
                    MACVTAP_NODE_MISSING, f"macvtap {link.name}",
                    f"{node} refers to no existing device (a stale node)",
                    _private_node_fix(link, node)) from None
            raise TapvirtError(HOST_ERROR, f"macvtap {link.name}",
                               f"cannot open {node}: {e.strerror}", "check the node") from None


def open_macvtap(link: LinkInfo, *, node: str, vnet_hdr: bool, queues: int,
                 privileged: bool = False) -> OwnedFds:
    """Open `node` once per queue (each open is a queue) and set the flags QEMU needs.

    `privileged` (CAP_NET_ADMIN, as for a managed macvtap): when `node` is missing or
    belongs to another namespace's macvtap, open the device through a throwaway private
    node instead of failing."""
    if link.kind is not LinkKind.MACVTAP:
        raise wrong_kind_error(link)
    if queues < 1:
        raise ValueError(f"queues must be at least 1, not {queues}")
    if link.macvtap_dev is None:
        raise TapvirtError(
            MACVTAP_NODE_FOREIGN, f"macvtap {link.name}",
            "cannot tell which char device belongs to it: /sys/class/net does not show "
            "this network namespace's device (sysfs shows the namespace that mounted it)",
            "run tapvirt where sysfs is mounted for this namespace (ip netns exec does "
            "that), or have the privileged side pass the fd")
    want = t.IFF_VNET_HDR if vnet_hdr else 0
    if queues > 1:
        want |= t.IFF_MULTI_QUEUE
    with OwnedFds() as owned:
        for _ in range(queues):
            fd = _open_checked(link, node, privileged)
            owned.add(fd)
            try:
                _name, flags = t.get_iff(fd)
                new = (flags & ~(t.IFF_VNET_HDR | t.IFF_MULTI_QUEUE)) | want
                if new != flags:
                    # An empty name: on a macvtap fd TUNSETIFF only changes these flags.
                    t.set_iff(fd, "", new)
                t.reset_fd_state(fd)
            except OSError as e:
                raise TapvirtError(HOST_ERROR, f"macvtap {link.name}",
                                   f"setting vnet_hdr/multi_queue on {node} failed: "
                                   f"{e.strerror}", "report this as a bug") from None
        return OwnedFds(owned.release())


def _open_checked(link: LinkInfo, node: str, privileged: bool) -> int:
    """An fd of `link`'s char device, verified; the caller owns it."""
    try:
        fd = _open_node(link, node)
        try:
            _verify(fd, link, node)
        except BaseException:
            os.close(fd)
            raise
        return fd
    except TapvirtError as err:
        if not privileged or err.code not in (MACVTAP_NODE_FOREIGN, MACVTAP_NODE_MISSING):
            raise
        fd_or_none = _open_private(link)
        if fd_or_none is None:
            raise
        try:
            _verify(fd_or_none, link, "the private node")
        except BaseException:
            os.close(fd_or_none)
            raise
        return fd_or_none


def _open_private(link: LinkInfo) -> int | None:
    """Open the device through a node made for this one open in a private (0700)
    directory, removed again at once. The first place that allows device nodes wins
    (tmpfs /tmp is often mounted nodev; devtmpfs /dev never is)."""
    assert link.macvtap_dev is not None
    for parent in (tempfile.gettempdir(), "/dev"):
        try:
            directory = tempfile.mkdtemp(prefix=".tapvirt-mvt-", dir=parent)
        except OSError:
            continue
        path = os.path.join(directory, "tap")
        try:
            os.mknod(path, 0o600 | stat.S_IFCHR, os.makedev(*link.macvtap_dev))
            return os.open(path, os.O_RDWR | os.O_CLOEXEC)
        except OSError:
            continue
        finally:
            with contextlib.suppress(OSError):
                os.unlink(path)
            with contextlib.suppress(OSError):
                os.rmdir(directory)
    return None


def _verify(fd: int, link: LinkInfo, node: str) -> None:
    st = os.fstat(fd)
    rdev = (os.major(st.st_rdev), os.minor(st.st_rdev))
    assert link.macvtap_dev is not None
    if not stat.S_ISCHR(st.st_mode) or rdev != link.macvtap_dev:
        got = f"c {rdev[0]}:{rdev[1]}" if stat.S_ISCHR(st.st_mode) else "not a char device"
        raise TapvirtError(
            MACVTAP_NODE_FOREIGN, f"macvtap {link.name}",
            f"{node} is {got}, but macvtap {link.name} is c "
            f"{link.macvtap_dev[0]}:{link.macvtap_dev[1]}: the node belongs to another "
            f"device (/dev/tapN names collide across network namespaces)",
            _private_node_fix(link, node))
    try:
        name, _flags = t.get_iff(fd)
    except OSError as e:
        raise TapvirtError(MACVTAP_NODE_FOREIGN, f"macvtap {link.name}",
                           f"{node} is not a macvtap ({e.strerror})",
                           _private_node_fix(link, node)) from None
    if name != link.name:
        raise TapvirtError(
            MACVTAP_NODE_FOREIGN, f"macvtap {link.name}",
            f"{node} belongs to device {name!r}, not {link.name}",
            _private_node_fix(link, node))


# -- managed macvtaps (CAP_NET_ADMIN) ------------------------------------------------------

def create_macvtap(name: str | None, *, link: str, mode: str, mac: str, up: bool,
                   nl: RtNetlink, lookup: Lookup, net_admin: bool) -> LinkInfo:
    """Create a macvtap on `link` with `mode` and `mac`: `name` or the first free macvtapN."""
    need_privilege(net_admin, f"macvtap {name or 'macvtapN'}")
    if name is not None:
        validate_ifname(name)
    validate_ifname(link)
    if mode not in MACVLAN_MODES or mode == "source":
        raise ValueError(f"unknown macvtap mode {mode!r}")
    address = parse_mac(mac)
    lower = lookup(link)
    if lower is None:
        raise TapvirtError(SOURCE_DEV_MISSING, f"device {link}",
                           f"the macvtap's lower device {link} does not exist here",
                           "name an existing link in <source dev='...'/> (ip link show)")
    info_data = nested(IFLA_INFO_DATA, attr_u32(IFLA_MACVLAN_MODE, MACVLAN_MODES[mode]))
    body = (attr_u32(IFLA_LINK, lower.ifindex) + attr(IFLA_ADDRESS, address)
            + nested(IFLA_LINKINFO, attr_str(IFLA_INFO_KIND, "macvtap"), info_data))
    candidates = [name] if name is not None else [f"macvtap{n}" for n in range(MAX_GENERATED)]
    for candidate in candidates:
        if name is None and lookup(candidate) is not None:
            continue
        try:
            nl.new_link(attrs=attr_str(IFLA_IFNAME, candidate) + body, create=True,
                        flags=IFF_UP if up else 0, change=IFF_UP if up else 0)
        except OSError as e:
            if e.errno == errno.EEXIST and name is None:
                continue
            if e.errno == errno.EEXIST:
                raise TapvirtError(DEVICE_EXISTS, f"device {name}",
                                   f"a device called {name} already exists",
                                   "remove <target dev> to get a free macvtapN") from None
            if e.errno == errno.EPERM:
                need_privilege(False, f"macvtap {candidate}")
            raise TapvirtError(HOST_ERROR, f"macvtap {candidate}",
                               f"creating it on {link} (mode {mode}) failed: {e.strerror}",
                               f"check {link}: ip -d link show dev {link}") from None
        created = lookup(candidate)
        if created is None:
            raise TapvirtError(HOST_ERROR, f"macvtap {candidate}",
                               "vanished right after creation", "retry")
        return created
    raise TapvirtError(HOST_ERROR, "macvtapN", "no free macvtapN name",
                       "name the device in <target dev>")
