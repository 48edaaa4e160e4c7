"""The CNI verbs of tapvirt-cni: ADD, DEL, CHECK, GC, STATUS, VERSION (spec 1.1.0).

A thin protocol layer: the devices are made by tapvirt-prep's core (`tapvirt.prep.verbs`
over `tapvirt.host.admin`: exclusive creation, configured before anyone can attach, the
tapvirt-prep mark, verified private macvtap nodes), inside the pod's namespace in a
forked child (`nsexec`). On top of the prep mark every device carries `cni=<hash of the
container ID>`, so DEL and GC only ever remove what this plugin made for that container.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import sys
import time
from typing import Any

from tapvirt.cni import state
from tapvirt.cni.config import (
    SUPPORTED_VERSIONS,
    Env,
    NetConf,
    check_version,
    parse_netconf,
    pod_key,
    valid_attachments,
    version_tuple,
)
from tapvirt.cni.errors import (
    CNI_BUSY,
    CNI_CHECK_FAILED,
    CNI_CONFIG,
    CNI_EXISTS,
    CNI_HOST,
    CNI_NOT_AVAILABLE,
)
from tapvirt.cni.nsexec import NetnsGone, run_in_netns
from tapvirt.errors import TapvirtError

LOCK_PATH = "/run/tapvirt-prep.lock"  # shared with tapvirt-prep: one view of the quotas
LOCK_TIMEOUT = 30.0
TUN_NODE = "/dev/net/tun"
NODE_PREFIX = "cni"  # private macvtap nodes are <nodeDir>/<pod>/cni.<ifname>


def log(line: str) -> None:
    """Logs go to stderr (stdout is the result); callers quote every field."""
    print(f"tapvirt-cni: {line}", file=sys.stderr)


def q(value: object) -> str:
    """A logged field: JSON-quoted, so no value can forge a log line or a field."""
    return json.dumps(value)


@contextlib.contextmanager
def locked(path: str = LOCK_PATH, timeout: float = LOCK_TIMEOUT) -> Any:
    """The tapvirt-prep lock; "try again later" (11) if another run holds it too long."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    except OSError:
        yield  # no /run: nothing to serialise against
        return
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise TapvirtError(
                        CNI_BUSY, f"lock {path}", f"held by another run for {timeout:g} s",
                        "try again later (the runtime retries)") from None
                time.sleep(0.05)
        yield
    finally:
        os.close(fd)


# ---------------------------------------------------------------- VERSION / STATUS
def version(data: dict[str, Any]) -> dict[str, Any]:
    asked = data.get("cniVersion")
    current = asked if asked in SUPPORTED_VERSIONS else SUPPORTED_VERSIONS[-1]
    return {"cniVersion": current, "supportedVersions": list(SUPPORTED_VERSIONS)}


def status(data: dict[str, Any], tun_node: str = TUN_NODE) -> None:
    check_version(data, minimum="1.1.0")
    try:
        fd = os.open(tun_node, os.O_RDWR | os.O_CLOEXEC)
    except OSError as exc:
        raise TapvirtError(
            CNI_NOT_AVAILABLE, f"tun clone device {tun_node}",
            f"cannot be opened read-write: {exc.strerror}",
            "load the tun module (modprobe tun) and make sure the node exists: "
            "mknod /dev/net/tun c 10 200") from None
    os.close(fd)


# ---------------------------------------------------------------- ADD
def _requester_and_policy(conf: NetConf) -> tuple[Any, Any, Any]:
    from tapvirt.prep.log import DecisionLog
    from tapvirt.prep.policy import Policy, Principal, Requester, load_policy

    if conf.policy is None:
        return Requester(Principal.from_uid(0), "root"), Policy("-"), DecisionLog(verbose=True)
    assert conf.owner is not None
    policy = load_policy(conf.policy)
    return (Requester(Principal.from_uid(conf.owner), "service"), policy,
            DecisionLog(verbose=True, log_file=policy.settings.log_file))


def _group(gid: int | None) -> tuple[int, str] | None:
    if gid is None:
        return None
    import grp

    try:
        return gid, grp.getgrgid(gid).gr_name
    except KeyError:
        return gid, str(gid)


def devname(conf: NetConf, env: Env) -> str:
    """The device to make: `device` when given (to follow another interface plugin in a
    chain, which made CNI_IFNAME already), else CNI_IFNAME."""
    return conf.device or env.ifname


def node_path(conf: NetConf, env: Env) -> str:
    dev = devname(conf, env)
    return f"{conf.node_dir}/{pod_key(env)}/{NODE_PREFIX}.{dev}"


def _add_in_netns(conf: NetConf, env: Env, requester: Any, policy: Any,
                  dlog: Any) -> dict[str, Any]:
    """Runs in the child, inside the pod's namespace."""
    dev = devname(conf, env)
    from tapvirt.host import admin
    from tapvirt.prep import verbs
    from tapvirt.prep.policy import Principal

    with admin.Admin() as adm:
        if adm.get(dev) is not None:
            raise _exists(dev)
        ctx = verbs.Context(requester, policy, dlog, adm, NODE_PREFIX,
                            f"{conf.node_dir}/{pod_key(env)}", gc_collects_nodes=False)
        owner = Principal.from_uid(conf.owner if conf.owner is not None else 0)
        group_only = conf.owner is None
        spec: verbs.TapSpec | verbs.MacvtapSpec
        if conf.macvtap is not None:
            from tapvirt.prep.names import random_tap_mac

            spec = verbs.MacvtapSpec(dev, owner, conf.macvtap.link,
                                     conf.mac or random_tap_mac(), conf.macvtap.mode,
                                     _group(conf.group), conf.queues, private_node=True,
                                     group_only=group_only)
            res = verbs.prepare_macvtap(ctx, spec)
        else:
            spec = verbs.TapSpec(dev, owner, _group(conf.group), conf.bridge,
                                 conf.queues, conf.mac, conf.mtu, group_only=group_only)
            res = verbs.prepare_tap(ctx, spec)
        if res.action != "created":  # appeared between our look and the creation
            raise _exists(dev)
        link = adm.get(dev)
        try:
            if link is None or link.mark is None:
                raise TapvirtError(CNI_HOST, f"device {dev}",
                                   "vanished right after creation", "try again")
            mark = {**link.mark, "cni": state.attachment_hash(env.container_id)}
            adm.set_link(link.info.ifindex, ifalias=admin.make_mark(mark))
            link = adm.get(dev)
            assert link is not None
        except BaseException:
            _remove_device(adm, dev, env.container_id)
            raise
        return {"mac": link.info.mac, "mtu": link.info.mtu, "ifindex": link.info.ifindex,
                "node": res.device.get("node")}


def _exists(dev: str) -> TapvirtError:
    return TapvirtError(
        CNI_EXISTS, f"interface {dev}",
        "an interface of that name already exists in the pod's namespace; it is left "
        "as it is (it may belong to someone else)",
        "choose another interface name (Multus: the `interface` of the network selection)")


def _remove_device(adm: Any, ifname: str, container_id: str) -> bool:
    """Delete IFNAME if this plugin made it for this container. True if deleted."""
    link = adm.get(ifname)
    if link is None or link.mark is None:
        return False
    if link.mark.get("cni") != state.attachment_hash(container_id):
        return False
    adm.delete(link.info.ifindex)
    return True


def _node_rdev(path: str | None) -> list[int] | None:
    if not path:
        return None
    try:
        st = os.lstat(path)
    except OSError:
        return None
    return [os.major(st.st_rdev), os.minor(st.st_rdev)]


def _drop_node(path: str | None, rdev: list[int] | None, node_dir: str) -> None:
    """Revoke a private node we made (only a char node of that device, only in nodeDir):
    made root:root 0600 before it is unlinked, so a hard link the pod's owner kept of it
    opens nothing once the kernel gives the number to the next macvtap; then remove its
    pod directory if that is empty now."""
    from tapvirt.host import privnodes

    if not path or not path.startswith(node_dir.rstrip("/") + "/") or "/../" in path:
        return
    number = (rdev[0], rdev[1]) if rdev and len(rdev) == 2 else None
    privnodes.revoke_path(path, unlink=True, rdev=number)
    with contextlib.suppress(OSError):
        os.rmdir(os.path.dirname(path))


def add(conf: NetConf, env: Env) -> dict[str, Any]:
    requester, policy, dlog = _requester_and_policy(conf)
    store = state.Store(conf.state_dir)
    node = node_path(conf, env) if conf.kind == "macvtap" else None
    dev = devname(conf, env)
    rec = state.Record(env.container_id, env.ifname, env.netns, conf.kind, conf.name, node,
                       device=dev)
    with locked():
        if store.read(env.container_id, env.ifname) is None:
            store.write(rec)  # before anything exists: GC can always find what we made
            fresh = True
        else:
            fresh = False  # a repeated ADD: the record belongs to the first one
        try:
            try:
                made = run_in_netns(env.netns, lambda: _add_in_netns(
                    conf, env, requester, policy, dlog), sysfs=conf.kind == "macvtap")
            except NetnsGone:
                from tapvirt.cni.errors import CNI_NETNS

                raise TapvirtError(CNI_NETNS, f"CNI_NETNS {env.netns!r}", "does not exist",
                                   "give the path of the pod's network namespace") from None
        except BaseException:
            if fresh:
                store.remove(env.container_id, env.ifname)
            raise
        # rewritten also after a repeated ADD that found a stale record: this is the truth
        rec.rdev = _node_rdev(made.get("node"))
        store.write(rec)
    log(f"added kind={q(conf.kind)} device={q(dev)} ifname={q(env.ifname)} "
        f"container={q(env.container_id)} netns={q(env.netns)} mac={q(made['mac'])} "
        f"mtu={made['mtu']} node={q(node)}")
    result = dict(conf.prev_result or {})
    result["cniVersion"] = conf.cni_version
    iface: dict[str, Any] = {"name": dev, "mac": made["mac"], "sandbox": env.netns}
    if version_tuple(conf.cni_version) >= (1, 1, 0):
        iface["mtu"] = made["mtu"]
    if node:
        iface["tapvirtNode"] = node  # non-standard: where the pod finds the macvtap's node
    result["interfaces"] = [*(result.get("interfaces") or []), iface]
    result.setdefault("ips", [])
    return result


# ---------------------------------------------------------------- DEL
def delete(conf: NetConf, env: Env) -> None:
    store = state.Store(conf.state_dir)
    with locked():
        rec = store.read(env.container_id, env.ifname)
        netns = env.netns or (rec.netns if rec else "")
        removed = False
        if netns:
            # a missing namespace took the device with it
            with contextlib.suppress(NetnsGone):
                removed = bool(run_in_netns(netns, lambda: _del_in_netns(
                    rec.device if rec and rec.device else devname(conf, env),
                    env.container_id)))
        if rec is not None:
            _drop_node(rec.node, rec.rdev, conf.node_dir)
            store.remove(env.container_id, env.ifname)
    log(f"deleted ifname={q(env.ifname)} container={q(env.container_id)} "
        f"netns={q(env.netns)} device_removed={removed} record={rec is not None}")


def _del_in_netns(dev: str, container_id: str) -> bool:
    from tapvirt.host import admin

    with admin.Admin() as adm:
        link = adm.get(dev)
        if link is not None and (link.mark is None or link.mark.get("cni") !=
                                 state.attachment_hash(container_id)):
            log(f"not deleting {q(dev)}: it was not made by tapvirt-cni for "
                f"container {q(container_id)}")
        return _remove_device(adm, dev, container_id)


# ---------------------------------------------------------------- CHECK
def _result_iface(conf: NetConf, env: Env) -> dict[str, Any]:
    dev = devname(conf, env)
    prev = conf.prev_result
    if not prev:
        raise TapvirtError(CNI_CONFIG, "prevResult", "CHECK needs the cached ADD result",
                           "pass the result of ADD as prevResult (the runtime does)")
    for iface in prev.get("interfaces") or []:
        if isinstance(iface, dict) and iface.get("name") == dev and \
                iface.get("sandbox") == env.netns:
            return iface
    raise TapvirtError(CNI_CHECK_FAILED, f"prevResult interface {dev}",
                       f"no interface named {dev!r} with sandbox {env.netns!r} in "
                       "prevResult", "run ADD again (delete the attachment first)")


def _check_in_netns(conf: NetConf, env: Env, iface: dict[str, Any],
                    rec: state.Record | None) -> dict[str, list[Any]]:
    from tapvirt.host import admin
    from tapvirt.host.api import LinkKind

    dev = devname(conf, env)
    with admin.Admin() as adm:
        link = adm.get(dev)
        if link is None:
            return {"exists": [True, False]}
    info, mark = link.info, link.mark or {}
    wants: list[tuple[str, Any, Any]] = [
        ("mark", state.attachment_hash(env.container_id), mark.get("cni")),
        ("up", True, info.up),
    ]
    if iface.get("mac"):
        wants.append(("mac", str(iface["mac"]).lower(), info.mac))
    mtu = iface.get("mtu") or conf.mtu
    if mtu:
        wants.append(("mtu", mtu, info.mtu))
    if conf.macvtap is not None:
        wants += [("kind", "macvtap", str(info.kind)), ("link", conf.macvtap.link, info.link),
                  ("mode", conf.macvtap.mode, info.macvtap_mode)]
        if info.kind == LinkKind.MACVTAP:
            node = rec.node if rec else None
            try:
                rdev: list[int] | None = list(admin.macvtap_chardev(info.name, info.ifindex))
            except (OSError, ValueError):
                rdev = None
            have = _node_rdev(node)
            wants.append(("node", rdev, have))
            if node and have:
                st = os.lstat(node)
                wants.append(("node owner", conf.owner if conf.owner is not None else 0,
                              st.st_uid))
    else:
        tun = info.tun
        wants += [("kind", "tap", str(info.kind)), ("bridge", conf.bridge, info.master)]
        if tun is not None:
            wants += [("owner", conf.owner, tun.owner), ("group", conf.group, tun.group),
                      ("multi_queue", conf.multi_queue, tun.multi_queue)]
    return {k: [w, h] for k, w, h in wants if w != h}


def check(conf: NetConf, env: Env) -> None:
    iface = _result_iface(conf, env)
    rec = state.Store(conf.state_dir).read(env.container_id, env.ifname)
    try:
        diffs = run_in_netns(env.netns, lambda: _check_in_netns(conf, env, iface, rec),
                             sysfs=conf.macvtap is not None)
    except NetnsGone:
        diffs = {"netns": ["exists", "missing"]}
    dev = devname(conf, env)
    if diffs:
        listed = "; ".join(f"{k}: want {w}, have {h}" for k, (w, h) in diffs.items())
        raise TapvirtError(
            CNI_CHECK_FAILED, f"{conf.kind} {dev}",
            f"differs from what ADD made: {listed}",
            "recreate the attachment (DEL, then ADD; Kubernetes: restart the pod)",
            details={"fields": diffs})


# ---------------------------------------------------------------- GC
def gc(data: dict[str, Any], conf: NetConf) -> None:
    """Remove what this plugin made for attachments the runtime no longer knows.

    Continues past failures and reports them all at the end (spec: GC)."""
    valid = valid_attachments(data)
    store = state.Store(conf.state_dir)
    failures: list[str] = []
    removed = 0
    with locked():
        for name, rec in store.all():
            if rec is None:
                failures.append(f"record {name} is unreadable (left alone)")
                continue
            if (rec.container_id, rec.ifname) in valid or rec.network != conf.name:
                continue
            dev, cid = rec.device or rec.ifname, rec.container_id
            try:
                with contextlib.suppress(NetnsGone):
                    run_in_netns(rec.netns, lambda d=dev, c=cid: _del_in_netns(d, c))  # type: ignore[misc]
                _drop_node(rec.node, rec.rdev, conf.node_dir)
                store.remove(rec.container_id, rec.ifname)
                removed += 1
            except (TapvirtError, OSError) as exc:
                failures.append(f"{rec.container_id}/{rec.ifname}: {exc}")
        failures += _gc_stray_nodes(conf, store)
    log(f"gc network={q(conf.name)} removed={removed} failures={len(failures)}")
    if failures:
        raise TapvirtError(CNI_HOST, "GC", "; ".join(failures)[:2000],
                           "see the plugin's stderr; remove the listed leftovers by hand")


def _gc_stray_nodes(conf: NetConf, store: state.Store) -> list[str]:
    """Private nodes under nodeDir that no record names (left by a crash between the
    record's removal and the node's): only our char nodes (cni.<ifname>) are removed."""
    import stat

    from tapvirt.host import privnodes

    known = {r.node for _, r in store.all() if r is not None and r.node}
    failures: list[str] = []
    try:
        pods = os.listdir(conf.node_dir)
    except OSError:
        return failures
    for pod in pods:
        pod_dir = os.path.join(conf.node_dir, pod)
        try:
            st = os.lstat(pod_dir)
            if not stat.S_ISDIR(st.st_mode) or st.st_uid != 0:
                continue
            entries = os.listdir(pod_dir)
        except OSError:
            continue
        for entry in entries:
            path = os.path.join(pod_dir, entry)
            if entry.startswith(NODE_PREFIX + ".") and path not in known:
                try:
                    privnodes.revoke_path(path, unlink=True)
                except OSError as exc:
                    failures.append(f"node {path}: {exc.strerror}")
        with contextlib.suppress(OSError):
            os.rmdir(pod_dir)
    return failures


# ---------------------------------------------------------------- dispatch
def dispatch(env: Env, data: dict[str, Any]) -> dict[str, Any] | None:
    """Run one verb; the result object to print (None: print nothing)."""
    if env.command == "VERSION":
        return version(data)
    if env.command == "STATUS":
        status(data)
        return None
    minimum = "1.1.0" if env.command == "GC" else "0.4.0"
    ver = check_version(data, minimum=minimum)
    conf = parse_netconf(data, env, ver)
    for w in conf.warnings:
        log(f"warning: {w}")
    log(f"request command={q(env.command)} network={q(conf.name)} "
        f"container={q(env.container_id)} ifname={q(env.ifname)} netns={q(env.netns)}")
    if env.command == "ADD":
        return add(conf, env)
    if env.command == "DEL":
        delete(conf, env)
        return None
    if env.command == "CHECK":
        check(conf, env)
        return None
    gc(data, conf)
    return None


def kernel_error(exc: OSError) -> TapvirtError:
    code = exc.errno or 0
    return TapvirtError(CNI_HOST, "tapvirt-cni", f"{os.strerror(code) if code else exc} "
                        f"(errno {code})", "check the node's kernel and devices",
                        details={"errno": code or errno.EIO})
