"""Helpers for the host-layer tests: a device world built by root in a test namespace, a
driver that runs LinuxHost operations in another process and reports JSON, and device
snapshots taken with `ip` (an independent view of the kernel)."""

from __future__ import annotations

import grp
import json
import os
import pwd
import random
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.support.sandbox import SRC, AsUser, Netns, run, unprivileged_python

# Runs in the process under test (unprivileged or root): executes OPS in order and prints
# one JSON list of results. Every result lists the fds the op left open ("leaked").
DRIVER = r'''
import dataclasses, fcntl, json, os, struct, sys, time
from tapvirt.errors import TapvirtError
from tapvirt.host.linux import LinuxHost
from tapvirt.host import tunioctl as t

def fds():
    out = set()
    for x in os.listdir("/proc/self/fd"):
        try:
            os.readlink("/proc/self/fd/" + x)  # the listing's own fd is closed by now
        except OSError:
            continue
        out.add(int(x))
    return out

host = LinuxHost()
host.lookup("lo")  # opens the netlink socket before fds are counted
held, out = [], []
for op in json.loads(__OPS__):
    kind = op.pop("op")
    before = fds()
    res = {"op": kind}
    try:
        if kind == "lookup":
            info = host.lookup(op["name"])
            res["info"] = None if info is None else dataclasses.asdict(info)
        elif kind == "identity":
            ident = host.identity()
            res.update(uid=ident.uid, gids=sorted(ident.gids), net_admin=ident.net_admin)
        elif kind == "node_status":
            st = host.node_status(op["path"])
            res["status"] = None if st is None else dataclasses.asdict(st)
        elif kind == "vhost":
            res["available"] = host.vhost_net_available()
        elif kind == "holders":
            res["pids"] = list(host.tap_holders(op["name"]))
        elif kind in ("open_tap", "open_macvtap", "create_tap"):
            hold = op.pop("hold", False)
            if kind == "open_tap":
                owned = host.open_tap(**op)
            elif kind == "open_macvtap":
                link = host.lookup(op.pop("name"))
                owned = host.open_macvtap(link, **op)
            else:
                name, owned = host.create_tap(**op)
                res["name"] = name
            fdl = owned.release()
            res["iff"] = [list(t.get_iff(fd)) for fd in fdl]
            res["hdrsz"] = [struct.unpack("i", fcntl.ioctl(fd, 0x800454D7, b"\0" * 4))[0]
                            for fd in fdl]
            res["cloexec"] = [not os.get_inheritable(fd) for fd in fdl]
            if hold:
                held.extend(fdl)
            else:
                for fd in fdl:
                    os.close(fd)
        elif kind == "create_macvtap":
            info = host.create_macvtap(**op)
            res["info"] = dataclasses.asdict(info)
        elif kind == "delete_link":
            host.delete_link(op["name"])
        elif kind == "set_link_up":
            host.set_link_up(op["name"])
        elif kind == "close_held":
            for fd in held:
                os.close(fd)
            held.clear()
        elif kind == "pause":
            print(json.dumps(out), flush=True)
            time.sleep(600)
        else:
            raise ValueError(kind)
    except TapvirtError as e:
        res["error"] = e.to_json()
    res["leaked"] = sorted(fds() - before - set(held))
    out.append(res)
print(json.dumps(out))
'''


def driver_code(ops: list[dict[str, Any]]) -> str:
    return DRIVER.replace("__OPS__", repr(json.dumps(ops)))


def run_as_user(as_user: AsUser, ops: list[dict[str, Any]]) -> list[dict[str, Any]]:
    proc = as_user.python(driver_code(ops))
    assert proc.returncode == 0, f"driver failed: {proc.stderr}"
    result: list[dict[str, Any]] = json.loads(proc.stdout)
    return result


def run_as_root(netns: Netns, ops: list[dict[str, Any]]) -> list[dict[str, Any]]:
    proc = netns.exec("env", f"PYTHONPATH={SRC}", unprivileged_python(), "-c", driver_code(ops))
    result: list[dict[str, Any]] = json.loads(proc.stdout)
    return result


def start_holder(as_user: AsUser, ops: list[dict[str, Any]]) -> subprocess.Popen[str]:
    """Run ops (ending in a hold) in a background process that then pauses; returns once
    the ops are done. The caller kills it by pid."""
    proc = subprocess.Popen(as_user.argv([unprivileged_python(), "-c",
                                          driver_code([*ops, {"op": "pause"}])]),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    results = json.loads(line)
    assert all("error" not in r for r in results), results
    return proc


def stop(proc: subprocess.Popen[str]) -> None:
    proc.kill()
    proc.communicate(timeout=10)


def uid_of(user: str | int) -> int:
    return int(user) if str(user).isdigit() else pwd.getpwnam(str(user)).pw_uid


def gid_of(group: str | int) -> int:
    return int(group) if str(group).isdigit() else grp.getgrnam(str(group)).gr_gid


_CONFIG_KEYS = ("type", "pi", "vnet_hdr", "multi_queue", "persist", "user", "group", "mode",
                "stp_state", "vlan_filtering")


def snapshot(netns: Netns, dev: str) -> dict[str, Any] | None:
    """The device state tapvirt promises not to change, as `ip -d -j link` reports it."""
    data: dict[str, Any] | None = netns.link_json(dev)
    if data is None:
        return None
    raw = data.get("linkinfo", {}).get("info_data", {})
    # Only configuration: bridge timers and queue counts move on their own.
    info = {k: v for k, v in raw.items() if k in _CONFIG_KEYS}
    return {"ifindex": data["ifindex"], "flags": sorted(data["flags"]),
            "mtu": data["mtu"], "address": data.get("address"),
            "master": data.get("master"), "operstate": data["operstate"], "info": info}


@dataclass
class World:
    """Devices precreated by root in `netns` for user `uid` (names are fixed per world)."""

    netns: Netns
    uid: int
    group: int
    macvtap_index: int
    devices: list[str] = field(default_factory=list)

    def snapshots(self) -> dict[str, Any]:
        return {d: snapshot(self.netns, d) for d in self.devices}


TAPS = {
    # name: extra `ip tuntap add` arguments (owner filled in by build_world)
    "tapu": ["vnet_hdr"],
    "tapmq": ["vnet_hdr", "multi_queue"],
    "tapmac": ["vnet_hdr"],
    "tapdown": ["vnet_hdr"],
}
GUEST_MAC = "52:54:00:12:34:56"


def random_ifindex() -> int:
    """A high ifindex: /dev/tap<ifindex> is shared by all namespaces on the host."""
    return random.randint(20000, 2**30)


def build_world(netns: Netns, uid: int, group: int, *, macvtap_index: int | None = None,
                macvtap_mac: str = "52:54:00:aa:bb:cc") -> World:
    ns = netns.name
    world = World(netns, uid, group, macvtap_index or random_ifindex())
    for name, extra in TAPS.items():
        netns.ip("tuntap", "add", "dev", name, "mode", "tap", "user", str(uid), *extra)
        world.devices.append(name)
    netns.ip("tuntap", "add", "dev", "tapg", "mode", "tap", "group", str(group), "vnet_hdr")
    netns.ip("tuntap", "add", "dev", "tapf", "mode", "tap", "user", "0", "vnet_hdr")
    netns.ip("tuntap", "add", "dev", "tun0", "mode", "tun", "user", str(uid))
    netns.ip("link", "set", "tapmac", "address", GUEST_MAC)
    netns.ip("link", "add", "br0", "type", "bridge")
    netns.ip("link", "set", "tapu", "master", "br0")
    netns.ip("link", "add", "ve0", "type", "veth", "peer", "name", "ve1")
    netns.ip("link", "set", "ve0", "mtu", "1400")
    netns.ip("link", "add", "link", "ve0", "name", "mvt0", "index", str(world.macvtap_index),
             "address", macvtap_mac, "type", "macvtap", "mode", "bridge")
    world.devices += ["tapg", "tapf", "tun0", "br0", "ve0", "ve1", "mvt0"]
    for dev in world.devices:
        if dev != "tapdown":
            netns.ip("link", "set", dev, "up")
    node = Path(f"/dev/tap{world.macvtap_index}")
    if node.exists():
        os.chown(node, uid, -1)
    del ns
    return world


def macvtap_rdev(netns: Netns, name: str, ifindex: int) -> tuple[int, int]:
    """major:minor of a macvtap, read inside its namespace (ip netns exec remounts /sys)."""
    out = netns.exec("cat", f"/sys/class/net/{name}/macvtap/tap{ifindex}/dev").stdout
    major, minor = out.strip().split(":")
    return int(major), int(minor)


def remove_node_if(path: Path, rdev: tuple[int, int]) -> None:
    """Remove a leftover /dev/tapN node (its owner was changed) if it is still ours."""
    try:
        st = path.stat()
    except OSError:
        return
    if (os.major(st.st_rdev), os.minor(st.st_rdev)) == rdev:
        run(["rm", "-f", str(path)], check=False)
