"""The seam between tapvirt and the Linux host: data types and the `Host` protocol.

`tapvirt.host.linux.LinuxHost` implements the protocol with netlink, ioctls and device
nodes; `tapvirt.host.fake.FakeHost` implements it from a data description for golden
tests. Everything above this layer (checks, connect, argv, lifecycle) talks to a `Host`
and never to the kernel directly.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol

IFF_UP = 0x1


class LinkKind(StrEnum):
    TAP = "tap"  # tun driver in TAP mode
    TUN = "tun"  # tun driver in TUN (L3) mode: unusable for a NIC
    MACVTAP = "macvtap"
    BRIDGE = "bridge"
    VETH = "veth"
    OTHER = "other"  # anything else; LinkInfo.kind_name says what


@dataclass(frozen=True)
class TunInfo:
    """The tun driver's attributes (IFLA_TUN_*) of a tap or tun device."""

    owner: int | None  # None: no owner set (any user who can open the tun node may attach)
    group: int | None
    multi_queue: bool
    vnet_hdr: bool
    persist: bool
    pi: bool
    num_queues: int = 0  # attached, enabled queues
    num_disabled_queues: int = 0


@dataclass(frozen=True)
class LinkInfo:
    name: str
    ifindex: int
    kind: LinkKind
    kind_name: str  # the raw IFLA_INFO_KIND ("tun", "macvtap", "veth", "" for none)
    flags: int  # IFF_* flags
    operstate: str  # "up", "down", "unknown", ...
    mac: str  # lower-case aa:bb:cc:dd:ee:ff ("" when the link has none)
    mtu: int
    master: str | None = None  # name of the bridge it is enslaved to
    link: str | None = None  # lower device of a macvtap/macvlan/veth, when visible
    tun: TunInfo | None = None  # taps and tuns only
    macvtap_mode: str | None = None  # "vepa", "bridge", "private", "passthru"
    macvtap_dev: tuple[int, int] | None = None  # (major, minor) of the macvtap char device

    @property
    def up(self) -> bool:
        return bool(self.flags & IFF_UP)


@dataclass(frozen=True)
class NodeStatus:
    """What stat() and access() say about a device node (the tun clone node, /dev/tapN)."""

    path: str
    is_char_device: bool
    rdev: tuple[int, int]  # (major, minor)
    uid: int
    gid: int
    mode: int  # permission bits
    readable_writable: bool  # os.access(path, R_OK | W_OK) for the calling process


@dataclass(frozen=True)
class Identity:
    """Who is asking: decides ownership checks and whether managed devices are possible."""

    uid: int
    gids: frozenset[int]
    net_admin: bool  # CAP_NET_ADMIN in the effective set


class OwnedFds:
    """Owns a list of fds until they are handed on; closes them on failure.

    Use as a context manager: on an exception every fd is closed; `release()` gives
    the fds to the caller (who then owns them) and leaves this object empty.
    """

    def __init__(self, fds: Sequence[int] = ()) -> None:
        self._fds: list[int] = list(fds)

    def add(self, fd: int) -> None:
        self._fds.append(fd)

    @property
    def fds(self) -> tuple[int, ...]:
        return tuple(self._fds)

    def __len__(self) -> int:
        return len(self._fds)

    def __iter__(self) -> Iterator[int]:
        return iter(self._fds)

    def release(self) -> list[int]:
        fds, self._fds = self._fds, []
        return fds

    def close(self) -> None:
        fds, self._fds = self._fds, []
        for fd in fds:
            with contextlib.suppress(OSError):
                os.close(fd)

    def __enter__(self) -> OwnedFds:
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is not None:
            self.close()


class Host(Protocol):
    """Everything tapvirt needs from the host's networking. See LinuxHost and FakeHost."""

    def identity(self) -> Identity: ...

    def lookup(self, name: str) -> LinkInfo | None:
        """The link called `name` in our network namespace, or None. O(1) in #links."""
        ...

    def node_status(self, path: str) -> NodeStatus | None:
        """stat()/access() of a device node, or None if the path does not exist."""
        ...

    def tap_holders(self, name: str) -> tuple[int, ...]:
        """Pids of processes we can see holding an fd attached to tap `name`."""
        ...

    def vhost_net_available(self) -> bool: ...

    def address_is_local(self, address: str) -> bool:
        """Whether a socket may bind to this IPv4 address here (to port 0: nothing is
        sent, nothing listens), as QEMU's socket backend will."""
        ...

    def open_tap(self, name: str, *, tun_node: str, vnet_hdr: bool, queues: int) -> OwnedFds:
        """Attach to an existing tap: one fd per queue (TUNSETIFF), per-fd state reset.

        Never changes the device (MAC, MTU, IFF_UP, persist, owner). Raises
        TapvirtError with a network code (kernel errno mapped) on failure."""
        ...

    def open_macvtap(
        self, link: LinkInfo, *, node: str, vnet_hdr: bool, queues: int
    ) -> OwnedFds:
        """Open a macvtap's char device once per queue and verify it is this device's."""
        ...

    def create_tap(
        self,
        name: str | None,
        *,
        tun_node: str,
        mac: str,
        mtu: int | None,
        bridge: str | None,
        vnet_hdr: bool,
        queues: int,
    ) -> tuple[str, OwnedFds]:
        """Create a non-persistent tap (name, or the first free vnetN), set MAC, MTU, UP,
        optionally enslave it to `bridge`; return its name and the attached fds. The tap
        vanishes with its last fd. Needs CAP_NET_ADMIN."""
        ...

    def create_macvtap(
        self, name: str | None, *, link: str, mode: str, mac: str, up: bool
    ) -> LinkInfo:
        """Create a macvtap (name, or the first free macvtapN) on `link`. Needs CAP_NET_ADMIN."""
        ...

    def set_link_up(self, name: str) -> None:
        """Bring a link tapvirt created up. Needs CAP_NET_ADMIN."""
        ...

    def delete_link(self, name: str) -> None:
        """Delete a link tapvirt created (a managed macvtap). Needs CAP_NET_ADMIN."""
        ...
