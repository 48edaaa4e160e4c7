"""A fake `Host` described by data, for golden tests of checks, connect and argv.

The description is a JSON object (usually `tests/data/xml2argv/NAME.host.json`):

```
{
  "identity": {"uid": 1000, "gids": [1000], "net_admin": false, "user": "alice"},
  "links": [{"name": "mytap0", "kind": "tap", "ifindex": 2, "up": true, "mac": "...",
             "mtu": 1500, "tun": {"owner": 1000, "multi_queue": false}}, ...],
  "nodes": {"/dev/net/tun": {"rdev": [10, 200], "uid": 0, "mode": 438, "rw": true}},
  "holders": {"mytap0": [4242]},
  "vhost_net": false,
  "addresses": ["127.0.0.1"],
  "fail": {"open_tap:mytap0": "EBUSY", "create_tap": "EPERM", "open_macvtap:mv0": "EACCES"}
}
```

Every field has a default (an unprivileged uid 1000 and an accessible tun node), so a
description names only what a test is about. Opens behave like the kernel where that is
cheap to model (a missing tap is EPERM, a multiqueue mismatch EINVAL, a second attach to a
single-queue tap EBUSY) and `fail` forces an errno for one operation. Failures are raised
as `OSError` with the errno, exactly what the kernel would say; mapping errno to error
codes is the caller's job and is tested through this fake.

File descriptors are fake numbers (counting up from `fd_start`, default 3, like libvirt's
test mock) owned by `FakeFds`, which records closing instead of calling `os.close`, so a
test can assert that every fd was closed and that nothing was changed on a device it did
not create (`FakeHost.changes`).
"""

from __future__ import annotations

import errno as errno_mod
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from tapvirt.errors import TapvirtError
from tapvirt.host.api import (
    IFF_UP,
    Identity,
    LinkInfo,
    LinkKind,
    NodeStatus,
    OwnedFds,
    TunInfo,
)
from tapvirt.netcodes import BRIDGE_HELPER_FAILED

TUN_RDEV = (10, 200)
MACVTAP_MAJOR = 246


class FakeFds(OwnedFds):
    """Fake fd numbers: closing records them in the host instead of closing real fds."""

    def __init__(self, host: FakeHost, fds: Sequence[int]) -> None:
        super().__init__(fds)
        self._host = host

    def close(self) -> None:
        for fd in self.release():
            self._host.close_fd(fd)


@dataclass
class Opened:
    """One successful open, as recorded by the fake."""

    op: str  # open_tap, open_macvtap, create_tap, vhost
    device: str
    fds: tuple[int, ...]
    vnet_hdr: bool = False
    queues: int = 1
    node: str = ""


@dataclass
class FakeHost:
    """The Host protocol on data. Build it with `FakeHost.from_json(...)`."""

    ident: Identity = field(default_factory=lambda: Identity(1000, frozenset({1000}), False))
    user_name: str | None = None
    links: dict[str, LinkInfo] = field(default_factory=dict)
    nodes: dict[str, NodeStatus] = field(default_factory=dict)
    holders: dict[str, tuple[int, ...]] = field(default_factory=dict)
    vhost_net: bool = False
    addresses: frozenset[str] = frozenset({"127.0.0.1"})  # IPv4 addresses of the host
    fail: dict[str, int] = field(default_factory=dict)
    fd_start: int = 3
    # records
    opened: list[Opened] = field(default_factory=list)
    created: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    changes: list[str] = field(default_factory=list)  # every change to a pre-existing device
    open_fds: set[int] = field(default_factory=set)
    closed_fds: list[int] = field(default_factory=list)
    _next_fd: int = 0
    _fd_device: dict[int, str] = field(default_factory=dict)  # fd -> non-persistent tap
    _preexisting: frozenset[str] = frozenset()

    # ---- construction -------------------------------------------------------------
    @classmethod
    def from_json(cls, data: Mapping[str, Any] | str | Path) -> FakeHost:
        if isinstance(data, Path):
            data = json.loads(data.read_text(encoding="utf-8"))
        elif isinstance(data, str):
            data = json.loads(data)
        assert isinstance(data, Mapping)
        ident_d = dict(data.get("identity", {}))
        uid = int(ident_d.get("uid", 1000))
        ident = Identity(
            uid=uid,
            gids=frozenset(int(g) for g in ident_d.get("gids", [uid])),
            net_admin=bool(ident_d.get("net_admin", uid == 0)),
        )
        links = {}
        next_index = 2
        for raw in data.get("links", []):
            link = _link_from_json(raw, next_index)
            next_index = max(next_index, link.ifindex) + 1
            links[link.name] = link
        nodes: dict[str, NodeStatus] = {
            "/dev/net/tun": NodeStatus("/dev/net/tun", True, TUN_RDEV, 0, 0, 0o666, True)
        }
        # A macvtap gets its /dev/tap<ifindex> node, owned by us, unless described otherwise.
        for link in links.values():
            if link.kind is LinkKind.MACVTAP and link.macvtap_dev is not None:
                path = f"/dev/tap{link.ifindex}"
                nodes[path] = NodeStatus(path, True, link.macvtap_dev, uid, uid, 0o600, True)
        for path, raw in dict(data.get("nodes", {})).items():
            if raw is None:
                nodes.pop(path, None)
            else:
                nodes[path] = _node_from_json(path, raw, uid)
        fail = {op: _errno(v) for op, v in dict(data.get("fail", {})).items()}
        host = cls(
            ident=ident,
            user_name=ident_d.get("user"),
            links=links,
            nodes=nodes,
            holders={k: tuple(int(p) for p in v) for k, v in data.get("holders", {}).items()},
            vhost_net=bool(data.get("vhost_net", False)),
            addresses=frozenset(str(x) for x in data.get("addresses", ["127.0.0.1"])),
            fail=fail,
            fd_start=int(data.get("fd_start", 3)),
        )
        host._next_fd = host.fd_start
        host._preexisting = frozenset(links)
        return host

    # ---- the Host protocol --------------------------------------------------------
    def identity(self) -> Identity:
        return self.ident

    def lookup(self, name: str) -> LinkInfo | None:
        self._maybe_fail(f"lookup:{name}")
        return self.links.get(name)

    def node_status(self, path: str) -> NodeStatus | None:
        return self.nodes.get(path)

    def tap_holders(self, name: str) -> tuple[int, ...]:
        return self.holders.get(name, ())

    def vhost_net_available(self) -> bool:
        return self.vhost_net

    def address_is_local(self, address: str) -> bool:
        return address in self.addresses

    def open_tap(self, name: str, *, tun_node: str, vnet_hdr: bool, queues: int) -> OwnedFds:
        self._maybe_fail(f"open_tap:{name}")
        self._open_node(tun_node, TUN_RDEV)
        link = self.links.get(name)
        if link is None:
            # TUNSETIFF on a missing name tries to create it: EPERM without CAP_NET_ADMIN.
            raise _oserror(errno_mod.EPERM if not self.ident.net_admin else errno_mod.EEXIST)
        if link.kind is not LinkKind.TAP or link.tun is None:
            raise _oserror(errno_mod.EINVAL)
        tun = link.tun
        if not self.ident.net_admin and not _may_attach(tun, self.ident):
            raise _oserror(errno_mod.EPERM)
        if tun.multi_queue != (queues > 1):
            raise _oserror(errno_mod.EINVAL)
        if not tun.multi_queue and (tun.num_queues > 0 or self.holders.get(name)):
            raise _oserror(errno_mod.EBUSY)
        fds = self._new_fds(queues)
        # TUNSETIFF writes the requested vnet_hdr bit into the device (kernel-facts §6).
        if tun.vnet_hdr != vnet_hdr:
            self.links[name] = replace(link, tun=replace(tun, vnet_hdr=vnet_hdr))
        self.opened.append(Opened("open_tap", name, fds.fds, vnet_hdr, queues, tun_node))
        return fds

    def open_macvtap(
        self, link: LinkInfo, *, node: str, vnet_hdr: bool, queues: int
    ) -> OwnedFds:
        self._maybe_fail(f"open_macvtap:{link.name}")
        status = self.nodes.get(node)
        if status is None:
            raise _oserror(errno_mod.ENOENT)
        if not status.readable_writable:
            raise _oserror(errno_mod.EACCES)
        if link.macvtap_dev is not None and status.rdev != link.macvtap_dev:
            # LinuxHost compares fstat().st_rdev with the device's major:minor.
            raise _oserror(errno_mod.EXDEV)
        fds = self._new_fds(queues)
        self.opened.append(Opened("open_macvtap", link.name, fds.fds, vnet_hdr, queues, node))
        return fds

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
        self._maybe_fail("create_tap")
        if name is not None:
            self._maybe_fail(f"create_tap:{name}")
        if not self.ident.net_admin:
            raise _oserror(errno_mod.EPERM)
        self._open_node(tun_node, TUN_RDEV)
        if name is not None and name in self.links:
            raise _oserror(errno_mod.EBUSY)  # IFF_TUN_EXCL on an existing name
        actual = name or self._free_name("vnet")
        if bridge is not None:
            br = self.links.get(bridge)
            if br is None:
                raise _oserror(errno_mod.ENODEV)
            if mtu is None:
                mtu = br.mtu  # like libvirt: the tap takes the bridge's MTU
        fds = self._new_fds(queues)
        self.links[actual] = LinkInfo(
            name=actual, ifindex=self._free_index(), kind=LinkKind.TAP, kind_name="tun",
            flags=IFF_UP, operstate="unknown", mac=mac, mtu=mtu or 1500, master=bridge,
            tun=TunInfo(owner=None, group=None, multi_queue=queues > 1, vnet_hdr=vnet_hdr,
                        persist=False, pi=False, num_queues=queues),
        )
        self.created.append(actual)
        for fd in fds.fds:
            self._fd_device[fd] = actual
        self.opened.append(Opened("create_tap", actual, fds.fds, vnet_hdr, queues, tun_node))
        return actual, fds

    def create_macvtap(
        self, name: str | None, *, link: str, mode: str, mac: str, up: bool
    ) -> LinkInfo:
        self._maybe_fail("create_macvtap")
        if not self.ident.net_admin:
            raise _oserror(errno_mod.EPERM)
        lower = self.links.get(link)
        if lower is None:
            raise _oserror(errno_mod.ENODEV)
        if name is not None and name in self.links:
            raise _oserror(errno_mod.EEXIST)
        actual = name or self._free_name("macvtap")
        index = self._free_index()
        info = LinkInfo(
            name=actual, ifindex=index, kind=LinkKind.MACVTAP, kind_name="macvtap",
            flags=IFF_UP if up else 0, operstate="up" if up else "down", mac=mac,
            mtu=lower.mtu, link=link, macvtap_mode=mode, macvtap_dev=(MACVTAP_MAJOR, index),
        )
        self.links[actual] = info
        path = f"/dev/tap{index}"
        self.nodes[path] = NodeStatus(path, True, (MACVTAP_MAJOR, index), 0, 0, 0o600, True)
        self.created.append(actual)
        return info

    def set_link_up(self, name: str) -> None:
        self._maybe_fail(f"set_link_up:{name}")
        if not self.ident.net_admin:
            raise _oserror(errno_mod.EPERM)
        link = self.links[name]
        self._note_change(name, "set up")
        self.links[name] = replace(link, flags=link.flags | IFF_UP)

    def delete_link(self, name: str) -> None:
        self._maybe_fail(f"delete_link:{name}")
        if not self.ident.net_admin:
            raise _oserror(errno_mod.EPERM)
        if name not in self.links:
            raise _oserror(errno_mod.ENODEV)
        self._note_change(name, "deleted")
        link = self.links.pop(name)
        self.nodes.pop(f"/dev/tap{link.ifindex}", None)
        self.deleted.append(name)

    # ---- extras a real host provides outside the protocol ---------------------------
    def open_vhost_net(self, queues: int) -> OwnedFds:
        """Stands in for opening /dev/vhost-net once per queue."""
        self._maybe_fail("vhost")
        if not self.vhost_net:
            raise _oserror(errno_mod.ENOENT)
        fds = self._new_fds(queues)
        self.opened.append(Opened("vhost", "/dev/vhost-net", fds.fds, queues=queues))
        return fds

    def run_bridge_helper(self, bridge: str, *, helper: str, vnet_hdr: bool) -> OwnedFds:
        """Stands in for qemu-bridge-helper: one fd of a new tap on `bridge`."""
        code = self.fail.get("bridge_helper")
        if code is not None or bridge not in self.links:
            why = os.strerror(code or errno_mod.ENODEV)
            raise TapvirtError(
                BRIDGE_HELPER_FAILED, f"bridge {bridge}",
                f"{helper} --br={bridge}: failed to communicate with bridge helper: {why}",
                f"as root: allow the bridge in /etc/qemu/bridge.conf ('allow {bridge}')")
        fds = self._new_fds(1)
        self.opened.append(Opened("bridge_helper", bridge, fds.fds, vnet_hdr, 1, helper))
        return fds

    def close_fd(self, fd: int) -> None:
        if fd not in self.open_fds:
            raise AssertionError(f"fake fd {fd} closed twice or never opened")
        self.open_fds.discard(fd)
        self.closed_fds.append(fd)
        # A non-persistent tap vanishes with its last fd, as in the kernel.
        tap = self._fd_device.pop(fd, None)
        if tap is not None and tap not in self._fd_device.values():
            self.links.pop(tap, None)

    # ---- helpers --------------------------------------------------------------------
    def _maybe_fail(self, op: str) -> None:
        code = self.fail.get(op)
        if code is not None:
            raise _oserror(code)

    def _open_node(self, path: str, rdev: tuple[int, int]) -> None:
        status = self.nodes.get(path)
        if status is None:
            raise _oserror(errno_mod.ENOENT)
        if not status.readable_writable:
            raise _oserror(errno_mod.EACCES)
        if not status.is_char_device or status.rdev != rdev:
            raise _oserror(errno_mod.ENOTTY)  # TUNSETIFF on something that is not tun

    def _new_fds(self, n: int) -> FakeFds:
        fds = list(range(self._next_fd, self._next_fd + n))
        self._next_fd += n
        self.open_fds.update(fds)
        return FakeFds(self, fds)

    def _free_name(self, prefix: str) -> str:
        n = 0
        while f"{prefix}{n}" in self.links:
            n += 1
        return f"{prefix}{n}"

    def _free_index(self) -> int:
        return max((link.ifindex for link in self.links.values()), default=1) + 1

    def _note_change(self, name: str, what: str) -> None:
        if name in self._preexisting:
            self.changes.append(f"{name}: {what}")


def _may_attach(tun: TunInfo, ident: Identity) -> bool:
    """The kernel's tun_not_capable(), inverted: owner or group match, or neither set."""
    if tun.owner is None and tun.group is None:
        return True
    if tun.owner is not None and tun.owner == ident.uid:
        return True
    return tun.group is not None and tun.group in ident.gids


def _oserror(code: int) -> OSError:
    return OSError(code, os.strerror(code))


def _errno(value: str | int) -> int:
    if isinstance(value, int):
        return value
    code = getattr(errno_mod, value, None)
    if not isinstance(code, int):
        raise ValueError(f"unknown errno name {value!r} in fake host description")
    return code


_KINDS = {
    "tap": (LinkKind.TAP, "tun"),
    "tun": (LinkKind.TUN, "tun"),
    "macvtap": (LinkKind.MACVTAP, "macvtap"),
    "bridge": (LinkKind.BRIDGE, "bridge"),
    "veth": (LinkKind.VETH, "veth"),
}


def _link_from_json(raw: Mapping[str, Any], default_index: int) -> LinkInfo:
    kind_s = str(raw.get("kind", "tap"))
    kind, kind_name = _KINDS.get(kind_s, (LinkKind.OTHER, kind_s))
    ifindex = int(raw.get("ifindex", default_index))
    up = bool(raw.get("up", True))
    flags = int(raw.get("flags", 0)) | (IFF_UP if up else 0)
    tun = None
    if kind in (LinkKind.TAP, LinkKind.TUN):
        t = dict(raw.get("tun", {}))
        tun = TunInfo(
            owner=t.get("owner", 1000), group=t.get("group"),
            multi_queue=bool(t.get("multi_queue", False)), vnet_hdr=bool(t.get("vnet_hdr", False)),
            persist=bool(t.get("persist", True)), pi=bool(t.get("pi", False)),
            num_queues=int(t.get("num_queues", 0)),
            num_disabled_queues=int(t.get("num_disabled_queues", 0)),
        )
    macvtap_dev = None
    if kind is LinkKind.MACVTAP:
        dev = raw.get("macvtap_dev", [MACVTAP_MAJOR, ifindex])
        macvtap_dev = (int(dev[0]), int(dev[1]))
    return LinkInfo(
        name=str(raw["name"]),
        ifindex=ifindex,
        kind=kind,
        kind_name=kind_name,
        flags=flags,
        operstate=str(raw.get("operstate", "unknown" if up else "down")),
        mac=str(raw.get("mac", "fe:54:00:00:00:01")).lower(),
        mtu=int(raw.get("mtu", 1500)),
        master=raw.get("master"),
        link=raw.get("link"),
        tun=tun,
        macvtap_mode=raw.get("macvtap_mode", "bridge" if kind is LinkKind.MACVTAP else None),
        macvtap_dev=macvtap_dev,
    )


def _node_from_json(path: str, raw: Mapping[str, Any], uid: int) -> NodeStatus:
    rdev = raw.get("rdev", list(TUN_RDEV))
    return NodeStatus(
        path=path,
        is_char_device=bool(raw.get("char", True)),
        rdev=(int(rdev[0]), int(rdev[1])),
        uid=int(raw.get("uid", uid)),
        gid=int(raw.get("gid", uid)),
        mode=int(raw.get("mode", 0o600)),
        readable_writable=bool(raw.get("rw", True)),
    )
