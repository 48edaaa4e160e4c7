"""`LinkInfo` of a link by name or ifindex, from netlink (the truth) plus, for a macvtap,
its char device number from sysfs (only once sysfs is shown to be our namespace's)."""

from __future__ import annotations

import os

from tapvirt.errors import TapvirtError
from tapvirt.host.api import LinkInfo, LinkKind, TunInfo
from tapvirt.host.netlink import (
    IFLA_TUN_GROUP,
    IFLA_TUN_MULTI_QUEUE,
    IFLA_TUN_NUM_DISABLED_QUEUES,
    IFLA_TUN_NUM_QUEUES,
    IFLA_TUN_OWNER,
    IFLA_TUN_PERSIST,
    IFLA_TUN_PI,
    IFLA_TUN_TYPE,
    IFLA_TUN_VNET_HDR,
    MACVLAN_MODES,
    OPERSTATES,
    RawLink,
    RtNetlink,
)
from tapvirt.netcodes import INVALID_NAME

IFNAMSIZ = 16
IFF_TUN = 0x1
IFF_TAP = 0x2
SYSFS_NET = "/sys/class/net"

_KINDS = {"macvtap": LinkKind.MACVTAP, "bridge": LinkKind.BRIDGE, "veth": LinkKind.VETH}
_MODE_NAMES = {v: k for k, v in MACVLAN_MODES.items()}


def validate_ifname(name: str, *, subject: str | None = None) -> None:
    """Raise invalid-name unless the kernel would accept `name` (dev_valid_name())."""
    raw = os.fsencode(name)
    problem = ""
    if not raw:
        problem = "is empty"
    elif len(raw) >= IFNAMSIZ:
        problem = f"is {len(raw)} bytes long; Linux allows at most {IFNAMSIZ - 1}"
    elif name in (".", ".."):
        problem = "is not allowed"
    elif any(c in name for c in "/:") or any(c.isspace() for c in name) or b"\0" in raw:
        problem = "contains '/', ':', a NUL byte or whitespace"
    if problem:
        raise TapvirtError(
            INVALID_NAME, subject or f"device {name!r}",
            f"the interface name {name!r} {problem}",
            "use a name of 1-15 bytes without '/', ':' or whitespace",
        )


def format_mac(address: bytes) -> str:
    return ":".join(f"{b:02x}" for b in address)


def parse_mac(mac: str) -> bytes:
    parts = mac.split(":")
    if len(parts) != 6 or not all(len(p) == 2 for p in parts):
        raise ValueError(f"not a MAC address: {mac!r}")
    return bytes(int(p, 16) for p in parts)


def tun_info(attrs: dict[int, int], carrier: bool | None) -> TunInfo:
    multi_queue = bool(attrs.get(IFLA_TUN_MULTI_QUEUE, 0))
    num_queues = attrs.get(IFLA_TUN_NUM_QUEUES)
    if num_queues is None:
        # The kernel reports queue counts for multi_queue taps only. A single-queue tap
        # has carrier exactly while its one queue is attached (tun_attach() turns it on,
        # the last __tun_detach() off), unless the holder switched it off itself with
        # TUNSETCARRIER; an attach then still fails with EBUSY, which names the holder.
        num_queues = 1 if carrier and not multi_queue else 0
    return TunInfo(
        owner=attrs.get(IFLA_TUN_OWNER),  # absent when no owner was set
        group=attrs.get(IFLA_TUN_GROUP),
        multi_queue=multi_queue,
        vnet_hdr=bool(attrs.get(IFLA_TUN_VNET_HDR, 0)),
        persist=bool(attrs.get(IFLA_TUN_PERSIST, 0)),
        pi=bool(attrs.get(IFLA_TUN_PI, 0)),
        num_queues=num_queues,
        num_disabled_queues=attrs.get(IFLA_TUN_NUM_DISABLED_QUEUES, 0),
    )


def _read(path: str) -> str | None:
    try:
        with open(path, encoding="ascii") as f:
            return f.read().strip()
    except (OSError, UnicodeDecodeError):
        return None


def macvtap_chardev(raw: RawLink, *, sysfs: str = SYSFS_NET) -> tuple[int, int] | None:
    """(major, minor) of a macvtap's char device, or None when sysfs cannot be trusted.

    Netlink does not report the device number, so it comes from sysfs. But sysfs shows
    the network namespace of whoever MOUNTED it, not the caller's (kernel-facts §8): in a
    process that entered a netns without remounting /sys, /sys/class/net/NAME may be a
    different device of the same name in another namespace, with a different number.
    So the sysfs entry is used only when it agrees with netlink on everything that
    identifies the device here: ifindex, MAC, the lower device's ifindex (iflink) and the
    `tap<ifindex>` directory name. A decoy would need the same name, ifindex, random MAC
    and lower ifindex in another namespace; open_macvtap() then also compares the
    opened node's st_rdev with this number and the name TUNGETIFF reports.
    """
    base = os.path.join(sysfs, raw.name)
    if _read(os.path.join(base, "ifindex")) != str(raw.ifindex):
        return None
    if _read(os.path.join(base, "address")) != format_mac(raw.address):
        return None
    if raw.link is not None and _read(os.path.join(base, "iflink")) != str(raw.link):
        return None
    dev = _read(os.path.join(base, "macvtap", f"tap{raw.ifindex}", "dev"))
    if dev is None:
        return None
    major, _, minor = dev.partition(":")
    try:
        return int(major), int(minor)
    except ValueError:
        return None


def link_info(nl: RtNetlink, raw: RawLink, *, sysfs: str = SYSFS_NET) -> LinkInfo:
    """Turn a RawLink into a LinkInfo (resolving master and lower device names)."""
    tun: TunInfo | None = None
    if raw.kind == "tun":
        tun = tun_info(raw.tun, raw.carrier)
        kind = LinkKind.TUN if raw.tun.get(IFLA_TUN_TYPE) == IFF_TUN else LinkKind.TAP
    else:
        kind = _KINDS.get(raw.kind, LinkKind.OTHER)
    master = None
    if raw.master:
        m = nl.get_link(index=raw.master)
        master = m.name if m else None
    lower = None
    # IFLA_LINK of a veth whose peer sits in another namespace is an ifindex THERE:
    # resolving it here would name an unrelated device.
    if raw.link and raw.link_netnsid is None and raw.link != raw.ifindex:
        low = nl.get_link(index=raw.link)
        lower = low.name if low else None
    mode = _MODE_NAMES.get(raw.macvlan_mode) if raw.macvlan_mode is not None else None
    return LinkInfo(
        name=raw.name,
        ifindex=raw.ifindex,
        kind=kind,
        kind_name=raw.kind,
        flags=raw.flags,
        operstate=OPERSTATES[raw.operstate] if raw.operstate < len(OPERSTATES) else "unknown",
        mac=format_mac(raw.address),
        mtu=raw.mtu,
        master=master,
        link=lower,
        tun=tun,
        macvtap_mode=mode,
        macvtap_dev=macvtap_chardev(raw, sysfs=sysfs) if kind is LinkKind.MACVTAP else None,
    )


def lookup(nl: RtNetlink, name: str) -> LinkInfo | None:
    """The link called `name` in our namespace, or None. Raises invalid-name first."""
    validate_ifname(name)
    raw = nl.get_link(name=name)
    return None if raw is None else link_info(nl, raw)


def lookup_index(nl: RtNetlink, ifindex: int) -> LinkInfo | None:
    raw = nl.get_link(index=ifindex)
    return None if raw is None else link_info(nl, raw)
