"""The verbs of tapvirt-prep: tap, macvtap, from-domain, delete, list.

Each verb runs in the network namespace the process is in (the CLI enters --netns
first), asks the policy before it changes anything, logs the decision, and touches only
devices that carry tapvirt-prep's mark. Re-running a request on a matching device is a
success ("exists"); a device that differs is reported field by field and left alone.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from tapvirt.errors import TapvirtError
from tapvirt.host import admin, privnodes
from tapvirt.host.admin import Admin, AdminLink
from tapvirt.host.api import LinkKind
from tapvirt.netcodes import BRIDGE_MISSING, MAC_CONFLICT
from tapvirt.prep.errors import (
    BAD_REQUEST,
    DEVICE_FOREIGN,
    DEVICE_IN_USE,
    DEVICE_MISMATCH,
    NODE_DIR_UNUSABLE,
    NODE_UNSAFE,
    NOT_PREPARED,
    POLICY_DENIED,
)
from tapvirt.prep.log import DecisionLog
from tapvirt.prep.names import (
    check_ifname,
    check_mtu,
    check_netns,
    check_queues,
    random_tap_mac,
)
from tapvirt.prep.policy import (
    MACVTAP_MODES,
    Policy,
    Principal,
    Request,
    Requester,
    decide,
)


@dataclass
class Context:
    """Who asks, under which policy, in which namespace, with which netlink session."""

    requester: Requester
    policy: Policy
    log: DecisionLog
    admin: Admin
    netns: str | None = None
    node_dir: str = "/dev/tapvirt-prep"
    # tapvirt-prep's gc tells a live node from a stale one by the namespace its name
    # says (`<netns>.<dev>`). tapvirt-cni's pod node directories hold nodes of devices in
    # unnamed pod namespaces, which that rule would call stale: the CNI plugin records
    # them as revoke-only (still searched when a device number is handed out again) and
    # collects them itself (its GC, by its records).
    gc_collects_nodes: bool = True


@dataclass(frozen=True)
class TapSpec:
    name: str
    owner: Principal
    group: tuple[int, str] | None = None
    bridge: str | None = None
    queues: int = 1
    mac: str | None = None  # None: random, locally administered
    mtu: int | None = None  # None: the bridge's, or the kernel default
    guest_macs: frozenset[str] = frozenset()
    group_only: bool = False  # no --user: the tap has no owner, only the group

    @property
    def uid(self) -> int | None:
        return None if self.group_only else self.owner.uid


@dataclass(frozen=True)
class MacvtapSpec:
    name: str
    owner: Principal
    link: str
    mac: str
    mode: str = "bridge"
    group: tuple[int, str] | None = None
    queues: int = 1
    private_node: bool = False
    group_only: bool = False  # no --user: the node belongs to root and the group

    @property
    def uid(self) -> int:
        return 0 if self.group_only else self.owner.uid


@dataclass
class Result:
    action: str  # "created" | "exists" | "deleted"
    kind: str
    name: str
    rule: str = ""
    device: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"action": self.action, "kind": self.kind, "name": self.name,
                "rule": self.rule, "device": self.device, "warnings": self.warnings}

    def render(self) -> str:
        verb = {"created": "created", "exists": "already exists and matches:",
                "deleted": "deleted"}[self.action]
        extras = " ".join(f"{k}={v}" for k, v in self.device.items()
                          if v not in (None, "", False) and k not in ("name", "kind"))
        rule = f" [rule {self.rule}]" if self.rule else ""
        return f"{verb} {self.kind} {self.name} {extras}{rule}".rstrip()


# ---------------------------------------------------------------- shared steps
def _advise_queues(ctx: Context, result: Result, queues: int) -> Result:
    """Say that max_queues is advisory where the kernel does not enforce it: a
    multi-queue tap takes up to 256 queues from its owner (each TUNSETIFF attaches one
    more), and every open() of a macvtap's node is one more queue. Only a single-queue
    tap is limited by the kernel (a second attach is EBUSY)."""
    rule = next((r for r in ctx.policy.allow if r.label == result.rule), None)
    if rule is None or (result.kind == "tap" and queues <= 1):
        return result
    how = ("the kernel lets its owner attach up to 256 queues" if result.kind == "tap"
           else "every open() of its node is one more queue")
    result.warnings.append(
        f"max_queues {rule.max_queues} of {rule.label} is advisory for this {result.kind}: "
        f"{how}; tapvirt-prep checks only the --queues asked for")
    return result



def _owned_count(ctx: Context, uid: int, exclude: str) -> int:
    return sum(1 for link in ctx.admin.all_links()
               if link.mark is not None and link.mark.get("user") == str(uid)
               and link.info.name != exclude)


def _authorize(ctx: Context, req: Request, pending: int = 0) -> str:
    """Ask the policy (deny wins; quota counts the owner's marked devices), log, return
    the deciding rule. `pending`: devices this run will add before this one."""
    who = ctx.requester.principal.name
    try:
        existing = _owned_count(ctx, req.owner.uid, req.name) + pending
        decision = decide(ctx.policy, ctx.requester, req, existing)
    except TapvirtError as err:
        ctx.log.decision(who, "deny", str(err.details.get("rule", err.code.code)),
                         req.describe(), err.cause)
        raise
    ctx.log.decision(who, "allow", decision.rule, req.describe(), decision.reason)
    return decision.rule


def _foreign(name: str) -> TapvirtError:
    return TapvirtError(
        DEVICE_FOREIGN, f"device {name}",
        "exists but was not created by tapvirt-prep (no tapvirt-prep mark in its alias); "
        "it is never changed or deleted",
        "choose another name, or have an administrator remove it if unused: "
        f"ip link del {name}",
    )


def _mismatch(kind: str, name: str, diffs: dict[str, tuple[Any, Any]]) -> TapvirtError:
    listed = "; ".join(f"{k}: want {w}, have {h}" for k, (w, h) in diffs.items())
    return TapvirtError(
        DEVICE_MISMATCH, f"{kind} {name}",
        f"exists (made by tapvirt-prep) but differs from the request: {listed}",
        f"ask for what it has, or delete it first: tapvirt-prep delete {name}",
        details={"fields": {k: {"want": w, "have": h} for k, (w, h) in diffs.items()}},
    )


def _existing(ctx: Context, name: str) -> AdminLink | None:
    link = ctx.admin.get(name)
    if link is not None and link.mark is None:
        raise _foreign(name)
    return link


def describe_link(link: AdminLink) -> dict[str, Any]:
    info, mark = link.info, link.mark or {}
    out: dict[str, Any] = {
        "name": info.name,
        "kind": str(info.kind),
        "ifindex": info.ifindex,
        "user": int(mark["user"]) if mark.get("user", "").isdigit() else None,
        "mac": info.mac,
        "mtu": info.mtu,
        "up": info.up,
    }
    if info.tun is not None:
        out.update(owner=info.tun.owner, group=info.tun.group,
                   multi_queue=info.tun.multi_queue, bridge=info.master)
    if info.kind == LinkKind.MACVTAP:
        out.update(link=info.link, mode=info.macvtap_mode, node=mark.get("node"))
        if mark.get("group", "").isdigit():
            out["group"] = int(mark["group"])
    return out


# ---------------------------------------------------------------- tap
def _tap_request(ctx: Context, spec: TapSpec) -> Request:
    check_ifname(spec.name)
    if spec.bridge is not None:
        check_ifname(spec.bridge, what="bridge")
    check_queues(spec.queues)
    return Request("tap", spec.name, spec.owner, spec.group, bridge=spec.bridge,
                   queues=spec.queues, netns=ctx.netns)


def _tap_diffs(link: AdminLink, spec: TapSpec) -> dict[str, tuple[Any, Any]]:
    info, mark = link.info, link.mark or {}
    diffs: dict[str, tuple[Any, Any]] = {}
    if info.kind != LinkKind.TAP or info.tun is None:
        return {"kind": ("tap", str(info.kind))}
    tun = info.tun
    group = spec.group[0] if spec.group else None
    wants: list[tuple[str, Any, Any]] = [
        ("user", str(spec.owner.uid), mark.get("user")),
        ("owner", spec.uid, tun.owner),
        ("group", group, tun.group),
        ("multi_queue", spec.queues > 1, tun.multi_queue),
        ("persist", True, tun.persist),
        ("bridge", spec.bridge, info.master),
        ("up", True, info.up),
    ]
    if spec.mac is not None:
        wants.append(("mac", spec.mac, info.mac))
    if spec.mtu is not None:
        wants.append(("mtu", spec.mtu, info.mtu))
    for key, want, have in wants:
        if want != have:
            diffs[key] = (want, have)
    if info.mac in spec.guest_macs:
        diffs["mac"] = ("not a guest MAC", info.mac)
    return diffs


def _tap_defaults(ctx: Context, spec: TapSpec) -> tuple[str, int | None]:
    """The MAC and MTU to create with: explicit ones checked, defaults filled in."""
    if spec.mac is not None:
        if spec.mac in spec.guest_macs:
            raise TapvirtError(
                MAC_CONFLICT, f"tap {spec.name}: --mac {spec.mac}",
                "equals the guest's MAC: the kernel would drop the guest's frames as looped",
                "leave out --mac (a random fe:xx:.. MAC is chosen) or pick another MAC",
            )
        mac = spec.mac
    else:
        mac = random_tap_mac(spec.guest_macs)
    mtu = spec.mtu
    if mtu is None and spec.bridge is not None:
        br = ctx.admin.get(spec.bridge)
        if br is None or br.info.kind != LinkKind.BRIDGE:
            raise TapvirtError(
                BRIDGE_MISSING, f"--bridge {spec.bridge}",
                "no such bridge in this namespace" if br is None
                else f"is a {br.info.kind_name or br.info.kind}, not a bridge",
                f"name an existing bridge (ip -d link show {spec.bridge})",
            )
        mtu = br.info.mtu
    return mac, mtu


def _create_tap(ctx: Context, spec: TapSpec, rule: str) -> Result:
    mac, mtu = _tap_defaults(ctx, spec)
    fields = {"user": str(spec.owner.uid)}
    ctx.admin.create_tap(
        spec.name, uid=spec.uid, gid=spec.group[0] if spec.group else None,
        multi_queue=spec.queues > 1, mac=mac, mtu=mtu, bridge=spec.bridge,
        alias=admin.make_mark(fields),
    )
    link = ctx.admin.get(spec.name)
    assert link is not None
    ctx.log.event("created", requester=ctx.requester.principal.name, **describe_link(link))
    return Result("created", "tap", spec.name, rule, describe_link(link))


def prepare_tap(ctx: Context, spec: TapSpec) -> Result:
    req = _tap_request(ctx, spec)
    rule = _authorize(ctx, req)
    link = _existing(ctx, spec.name)
    if link is not None:
        diffs = _tap_diffs(link, spec)
        if diffs:
            raise _mismatch("tap", spec.name, diffs)
        return _advise_queues(ctx, Result("exists", "tap", spec.name, rule,
                                          describe_link(link)), spec.queues)
    return _advise_queues(ctx, _create_tap(ctx, spec, rule), spec.queues)


# ---------------------------------------------------------------- macvtap
def _macvtap_request(ctx: Context, spec: MacvtapSpec) -> Request:
    check_ifname(spec.name)
    check_ifname(spec.link, what="link")
    check_queues(spec.queues)
    if spec.mode not in MACVTAP_MODES:
        raise TapvirtError(BAD_REQUEST, f"--mode {spec.mode}", "unknown macvtap mode",
                           f"use one of {', '.join(MACVTAP_MODES)}")
    return Request("macvtap", spec.name, spec.owner, spec.group, link=spec.link,
                   mode=spec.mode, queues=spec.queues, netns=ctx.netns)


def _node_mode(spec: MacvtapSpec) -> tuple[int, int]:
    gid = spec.group[0] if spec.group else 0
    return gid, 0o660 if spec.group else 0o600


def _private_node_name(ctx: Context, name: str) -> str:
    return f"{ctx.netns or 'host'}.{name}"


def _give_node(ctx: Context, spec: MacvtapSpec, ifindex: int) -> str:
    """Give the owner the macvtap's char device; return the node path to open.

    /dev/tap<ifindex> is used only when it is this device's node (st_rdev equals the
    sysfs dev read in this namespace); if it is missing or belongs to another
    namespace's device, a private node is made in the node directory."""
    try:
        rdev = admin.macvtap_chardev(spec.name, ifindex)
    except (OSError, ValueError) as exc:
        raise TapvirtError(
            NODE_UNSAFE, f"macvtap {spec.name}",
            f"cannot read its char device number from sysfs: {exc}",
            "check that sysfs is available (tapvirt-prep mounts a private one)",
        ) from None
    gid, mode = _node_mode(spec)
    dev_path = f"/dev/tap{ifindex}"
    private_path = f"{ctx.node_dir}/{_private_node_name(ctx, spec.name)}"
    # The number may have belonged to a macvtap that vanished by other means: a node
    # made for it must not open this one.
    for path in privnodes.purge_rdev(rdev, keep={dev_path, private_path},
                                     dirs=privnodes.node_dirs(ctx.node_dir)):
        ctx.log.event("revoked", node=path, reason=f"stale node of {rdev[0]}:{rdev[1]}, "
                      f"now macvtap {spec.name}")
    if not spec.private_node:
        try:
            state = admin.node_state(dev_path)
        except ValueError:
            state = None  # a symlink or odd file: never touch it, use a private node
        if state is not None and state.rdev == rdev:
            try:
                admin.chown_node(dev_path, rdev, spec.uid, gid, mode)
                return dev_path
            except (OSError, ValueError):
                pass  # replaced under us: fall through to a private node
    privnodes.register_dir(ctx.node_dir, collect=ctx.gc_collects_nodes)
    try:
        dir_fd = admin.open_node_dir(ctx.node_dir)
    except (OSError, ValueError) as exc:
        raise TapvirtError(
            NODE_DIR_UNUSABLE, f"node directory {ctx.node_dir}", str(exc),
            "make it a root-owned 0755 directory (no symlinks on the way) or set "
            "[settings] node_dir in the policy",
        ) from None
    try:
        if admin.nodev(dir_fd):
            raise TapvirtError(
                NODE_DIR_UNUSABLE, f"node directory {ctx.node_dir}",
                "is on a filesystem mounted nodev: a device node there cannot be opened",
                "set [settings] node_dir to a directory under /dev (devtmpfs)",
            )
        node = _private_node_name(ctx, spec.name)
        try:
            admin.make_private_node(dir_fd, node, rdev, uid=spec.uid, gid=gid, mode=mode)
        except (OSError, ValueError) as exc:
            raise TapvirtError(
                NODE_UNSAFE, f"{ctx.node_dir}/{node}", str(exc),
                f"remove whatever is at {ctx.node_dir}/{node} (it is not our node)",
            ) from None
    finally:
        os.close(dir_fd)
    return f"{ctx.node_dir}/{node}"


def _macvtap_diffs(link: AdminLink, spec: MacvtapSpec) -> dict[str, tuple[Any, Any]]:
    info, mark = link.info, link.mark or {}
    if info.kind != LinkKind.MACVTAP:
        return {"kind": ("macvtap", str(info.kind))}
    wants: list[tuple[str, Any, Any]] = [
        ("user", str(spec.owner.uid), mark.get("user")),
        ("link", spec.link, info.link),
        ("mode", spec.mode, info.macvtap_mode),
        ("mac", spec.mac, info.mac),
        ("up", True, info.up),
        ("group", str(spec.group[0]) if spec.group else None, mark.get("group")),
    ]
    diffs = {k: (w, h) for k, w, h in wants if w != h}
    node = mark.get("node")
    try:
        state = admin.node_state(node) if node else None
    except ValueError:
        state = None
    try:
        rdev: tuple[int, int] | None = admin.macvtap_chardev(info.name, info.ifindex)
    except (OSError, ValueError):
        rdev = None
    gid, mode = _node_mode(spec)
    if state is None or state.rdev != rdev:
        diffs["node"] = (f"{node} for this device", "missing or another device's")
    elif (state.uid, state.gid, state.mode) != (spec.uid, gid, mode):
        diffs["node"] = (f"{spec.uid}:{gid} {mode:o}",
                         f"{state.uid}:{state.gid} {state.mode:o}")
    return diffs


def _create_macvtap(ctx: Context, spec: MacvtapSpec, rule: str) -> Result:
    fields = {"user": str(spec.owner.uid)}
    if spec.group:
        fields["group"] = str(spec.group[0])
    index = ctx.admin.create_macvtap(spec.name, link=spec.link, mode=spec.mode, mac=spec.mac,
                                     alias=admin.make_mark(fields))
    node: str | None = None
    try:
        ctx.admin.set_link(index, state="up")
        node = _give_node(ctx, spec, index)
        ctx.admin.set_link(index, ifalias=admin.make_mark({**fields, "node": node}))
    except BaseException:
        remove_device(ctx, index, spec.name, node)
        raise
    link = ctx.admin.get(spec.name)
    assert link is not None
    ctx.log.event("created", requester=ctx.requester.principal.name, **describe_link(link))
    return Result("created", "macvtap", spec.name, rule, describe_link(link))


def prepare_macvtap(ctx: Context, spec: MacvtapSpec) -> Result:
    req = _macvtap_request(ctx, spec)
    rule = _authorize(ctx, req)
    link = _existing(ctx, spec.name)
    if link is not None:
        diffs = _macvtap_diffs(link, spec)
        if diffs:
            raise _mismatch("macvtap", spec.name, diffs)
        return _advise_queues(ctx, Result("exists", "macvtap", spec.name, rule,
                                          describe_link(link)), spec.queues)
    return _advise_queues(ctx, _create_macvtap(ctx, spec, rule), spec.queues)


# ---------------------------------------------------------------- removing, gc
def remove_device(ctx: Context, index: int, name: str, node: str | None) -> None:
    """Delete a device tapvirt-prep made, and revoke its node first: the node its mark
    names (the mark is root-only, so it is trusted wherever the node is, whatever the
    node directory setting is now), then every other node of its device number."""
    rdev: tuple[int, int] | None = None
    with contextlib.suppress(OSError, ValueError):
        rdev = admin.macvtap_chardev(name, index)
    if node and os.path.isabs(node) and "/.." not in node:
        major = privnodes.macvtap_major()
        state = None
        with contextlib.suppress(ValueError):
            state = admin.node_state(node)
        if state is not None and (state.rdev == rdev or (rdev is None and state.rdev[0] == major)):
            privnodes.revoke_path(node, unlink=not privnodes.in_dev(node), rdev=state.rdev)
            rdev = rdev or state.rdev
    ctx.admin.delete(index)
    if rdev is not None:
        privnodes.purge_rdev(rdev, keep=set(), dirs=privnodes.node_dirs(ctx.node_dir))


def gc(ctx: Context) -> list[dict[str, Any]]:
    """Remove every node in the node directories (all ever used) that no live device
    claims: a node is live only while a macvtap marked by tapvirt-prep, in the namespace
    its name says, names this very path in its mark and has this device number. A node
    whose device number is free is removed whatever its name; one whose name points to
    no namespace in /run/netns (nor the host) while its number is in use is kept, as its
    claim cannot be checked (tapvirt-cni's pod nodes).

    Looks into every namespace, so the caller must not have entered one for the run,
    and must be in a private mount namespace (admin.private_sysfs): sysfs is remounted
    in each. Returns what was removed. (tapvirt-cni calls this for its GC.)"""
    privnodes.prune_registry()
    dirs = privnodes.node_dirs(ctx.node_dir, collected_only=True)
    nodes = [n for d in dirs for n in privnodes.nodes_in(d)]
    live = _claimed(nodes)
    removed: list[dict[str, Any]] = []
    for node in nodes:
        if node.path in live:
            continue
        if privnodes.number_in_use(node.rdev) and not any(
            ns is None or os.path.exists(f"{admin.NETNS_DIR}/{ns}")
            for ns, _ in privnodes.split_name(node.name)
        ):
            # its number is some device's and its name points to no namespace we can
            # look into (e.g. tapvirt-cni's node of a pod): whether it is that device's
            # cannot be checked, so it is left; the next create of that number revokes it
            continue
        if privnodes.revoke_path(node.path, unlink=True, rdev=node.rdev):
            rdev = f"{node.rdev[0]}:{node.rdev[1]}"
            ctx.log.event("gc-removed", node=node.path, rdev=rdev,
                          requester=ctx.requester.principal.name)
            removed.append({"node": node.path, "rdev": rdev})
    return removed


def _claimed(nodes: list[privnodes.Node]) -> set[str]:
    by_ns: dict[str | None, list[tuple[str, privnodes.Node]]] = {}
    for node in nodes:
        for ns, dev in privnodes.split_name(node.name):
            by_ns.setdefault(ns, []).append((dev, node))
    live: set[str] = set()
    home = os.open("/proc/self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        for ns, items in sorted(by_ns.items(), key=lambda kv: kv[0] or ""):
            try:
                if ns is not None:
                    admin.enter_netns(check_netns(ns))
            except (TapvirtError, OSError):
                continue  # no such namespace (any more): nothing there claims a node
            try:
                admin.remount_sysfs()
                with Admin() as adm:
                    for dev, node in items:
                        if _claims(adm, dev, node):
                            live.add(node.path)
            finally:
                admin.return_to_netns(home)
        admin.remount_sysfs()
    finally:
        os.close(home)
    return live


def _claims(adm: Admin, dev: str, node: privnodes.Node) -> bool:
    try:
        check_ifname(dev)
    except TapvirtError:
        return False
    link = adm.get(dev)
    if link is None or link.mark is None or link.info.kind != LinkKind.MACVTAP:
        return False
    if link.mark.get("node") != node.path:
        return False
    try:
        return admin.macvtap_chardev(dev, link.info.ifindex) == node.rdev
    except (OSError, ValueError):
        return False


# ---------------------------------------------------------------- delete / list
def _visible_to(ctx: Context, link: AdminLink) -> bool:
    if ctx.requester.is_root:
        return True
    return (link.mark or {}).get("user") == str(ctx.requester.principal.uid)


def delete(ctx: Context, name: str, *, force: bool = False) -> Result:
    check_ifname(name)
    link = ctx.admin.get(name)
    who = ctx.requester.principal.name
    if link is None:
        raise TapvirtError(NOT_PREPARED, f"device {name}", "does not exist in this namespace",
                           "see tapvirt-prep list")
    if link.mark is None:
        ctx.log.decision(who, "deny", "foreign", f"delete {name}", "not made by tapvirt-prep")
        raise _foreign(name)
    if not _visible_to(ctx, link):
        ctx.log.decision(who, "deny", "owner", f"delete {name}", "belongs to another user")
        raise TapvirtError(
            POLICY_DENIED, f"device {name}",
            f"was prepared for uid {link.mark.get('user')}, not for {who}",
            "only the user it was made for, or root, may delete it",
        )
    if link.info.tun is not None and not force and ctx.admin.attached(name):
        raise TapvirtError(
            DEVICE_IN_USE, f"tap {name}",
            "is attached (e.g. by a running guest): deleting it would cut the guest off",
            f"stop the guest first, or delete anyway: tapvirt-prep delete --force {name}",
        )
    ctx.log.decision(who, "allow", "root" if ctx.requester.is_root else "owner",
                     f"delete {name}", "made by tapvirt-prep for this user")
    desc = describe_link(link)
    remove_device(ctx, link.info.ifindex, name, link.mark.get("node"))
    ctx.log.event("deleted", requester=who, **desc)
    return Result("deleted", desc["kind"], name, "", desc)


def list_devices(ctx: Context) -> list[dict[str, Any]]:
    return [describe_link(link) for link in ctx.admin.all_links()
            if link.mark is not None and _visible_to(ctx, link)]


# ---------------------------------------------------------------- from-domain
@dataclass(frozen=True)
class DomainOptions:
    owner: Principal
    group: tuple[int, str] | None = None
    bridge: str | None = None  # taps are enslaved to it
    macvtap_link: str | None = None  # every interface becomes a macvtap on this link
    macvtap: dict[str, str] = field(default_factory=dict)  # per device: NAME -> LINK
    macvtap_mode: str = "bridge"
    private_node: bool = False
    group_only: bool = False


def domain_specs(domain: Any, opts: DomainOptions) -> list[TapSpec | MacvtapSpec]:
    """The devices a domain's managed='no' ethernet interfaces need."""
    from tapvirt.conf.model import InterfaceType

    ifaces = [i for i in domain.devices.interfaces
              if i.type == InterfaceType.ETHERNET and i.unmanaged and i.dev]
    guest_macs = frozenset(i.mac for i in ifaces)
    unknown = set(opts.macvtap) - {i.dev for i in ifaces}
    if unknown:
        raise TapvirtError(
            BAD_REQUEST, f"--macvtap {', '.join(sorted(unknown))}",
            "names no <target dev> of a managed='no' interface of the domain",
            "give --macvtap TARGETDEV=LINK for a device the domain names",
        )
    specs: list[TapSpec | MacvtapSpec] = []
    for iface in ifaces:
        link = opts.macvtap.get(iface.dev, opts.macvtap_link)
        if link is not None:
            specs.append(MacvtapSpec(iface.dev, opts.owner, link, iface.mac,
                                     opts.macvtap_mode, opts.group, iface.queues,
                                     opts.private_node, opts.group_only))
        else:
            specs.append(TapSpec(iface.dev, opts.owner, opts.group, opts.bridge,
                                 iface.queues, None,
                                 check_mtu(iface.mtu, what="<mtu size>") if iface.mtu else None,
                                 guest_macs, opts.group_only))
    return specs


@contextlib.contextmanager
def _rollback(ctx: Context) -> Iterator[list[str]]:
    created: list[str] = []
    try:
        yield created
    except BaseException:
        for name in reversed(created):
            with contextlib.suppress(Exception):
                link = ctx.admin.get(name)
                if link is not None and link.mark is not None:
                    remove_device(ctx, link.info.ifindex, name, link.mark.get("node"))
                    ctx.log.event("rolled-back", requester=ctx.requester.principal.name,
                                  name=name)
        raise


def from_domain(ctx: Context, domain: Any, opts: DomainOptions) -> list[Result]:
    """All or nothing: every check (names, policy, existing devices) passes before the
    first device is made; a failure while creating removes what this run made."""
    specs = domain_specs(domain, opts)
    names = [s.name for s in specs]
    dups = {n for n in names if names.count(n) > 1}
    if dups:
        raise TapvirtError(BAD_REQUEST, f"domain {domain.name}",
                           f"several interfaces name the same device: {sorted(dups)}",
                           "give every managed='no' interface its own <target dev>")
    plan: list[tuple[TapSpec | MacvtapSpec, str, AdminLink | None]] = []
    pending = 0
    for spec in specs:
        req = (_tap_request(ctx, spec) if isinstance(spec, TapSpec)
               else _macvtap_request(ctx, spec))
        rule = _authorize(ctx, req, pending)
        link = _existing(ctx, spec.name)
        if link is not None:
            diffs = (_tap_diffs(link, spec) if isinstance(spec, TapSpec)
                     else _macvtap_diffs(link, spec))
            if diffs:
                raise _mismatch(req.kind, spec.name, diffs)
        else:
            pending += 1
        plan.append((spec, rule, link))
    results: list[Result] = []
    with _rollback(ctx) as created:
        for spec, rule, link in plan:
            if link is not None:
                results.append(Result("exists", "tap" if isinstance(spec, TapSpec)
                                      else "macvtap", spec.name, rule, describe_link(link)))
                continue
            if isinstance(spec, TapSpec):
                results.append(_create_tap(ctx, spec, rule))
            else:
                results.append(_create_macvtap(ctx, spec, rule))
            created.append(spec.name)
    return [_advise_queues(ctx, r, spec.queues) for r, (spec, _, _) in zip(results, plan,
                                                                             strict=True)]
