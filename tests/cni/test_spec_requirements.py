"""The 15 requirements of a CNI tap plugin (shared/reference cni.md §2), one named test
each, against the real plugin executed as a runtime executes it, in throwaway `tv-`
namespaces. Kernel state is read back with `ip -d -j link` (netlink), never from the
plugin's own view."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

from tests.cni.conftest import Cni, is_id, tun_data
from tests.support.sandbox import SRC, Netns

MAC = "52:54:00:c1:00:01"


def _names(netns: Netns) -> set[str]:
    return {str(x["ifname"]) for x in json.loads(netns.ip("-j", "link", "show").stdout)}


def _veth(netns: Netns, name: str = "ve0") -> None:
    netns.ip("link", "add", name, "type", "veth", "peer", "name", f"{name}p")
    netns.ip("link", "set", name, "up")


# 1 ------------------------------------------------------------------ host netns untouched
def test_req01_netns_work_happens_in_a_child_never_in_the_plugin_process(
    netns: Netns,
) -> None:
    """The plugin process never switches namespace: the work function runs in a forked
    child inside CNI_NETNS, while the caller's own namespace (and thread) is unchanged."""
    code = f"""
import os, sys, json
sys.path.insert(0, {str(SRC)!r})
from tapvirt.cni.nsexec import run_in_netns
own = os.stat('/proc/self/ns/net').st_ino
inner = run_in_netns('/run/netns/{netns.name}', lambda: [os.getpid(),
                     os.stat('/proc/self/ns/net').st_ino])
print(json.dumps([own, os.getpid(), inner, os.stat('/proc/self/ns/net').st_ino]))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    own, pid, (child_pid, child_ns), after = json.loads(out)
    target = os.stat(f"/run/netns/{netns.name}").st_ino
    assert child_ns == target != own
    assert after == own and child_pid != pid


# 2 ------------------------------------------------------------------ VERSION
def test_req02_version_lists_the_supported_versions_and_nothing_else(cni: Cni) -> None:
    # podman's first call: every CNI_* variable "dummy"
    dummy = {k: "dummy" for k in ("CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME", "CNI_PATH")}
    run = cni.ok("VERSION", {"cniVersion": "1.0.0"}, env=dummy)
    assert run.out == {"cniVersion": "1.0.0",
                       "supportedVersions": ["0.4.0", "1.0.0", "1.1.0"]}
    assert run.stdout.count("\n") == 1
    # no stdin at all is fine too
    assert cni.ok("VERSION", b"").out["supportedVersions"][-1] == "1.1.0"


# 3 ------------------------------------------------------------------ env and config checks
def test_req03_add_checks_env_and_config_with_the_spec_codes(cni: Cni) -> None:
    cni.fails(4, "ADD", drop=("CNI_CONTAINERID",))
    cni.fails(4, "ADD", drop=("CNI_NETNS",))
    cni.fails(4, "ADD", ifname="a/b")
    cni.fails(4, "ADD", cid="-bad")
    cni.fails(4, "ADD", env={"CNI_COMMAND": "FROB"})
    cni.fails(6, "ADD", b"{not json")
    cni.fails(6, "ADD", b"[1, 2]")
    cni.fails(6, "ADD", b"[" * 100 + b"]" * 100)
    cni.fails(1, "ADD", cni.conf(version="0.3.1"))
    cni.fails(1, "ADD", cni.conf(version="9.9.9"))
    cni.fails(7, "ADD", cni.conf(mtu="big"))
    cni.fails(7, "ADD", cni.conf(owner=-1))
    cni.fails(7, "ADD", cni.conf(owner=None, group=None))
    cni.fails(7, "ADD", cni.conf(multiQueue=False, queues=4))
    cni.fails(7, "ADD", cni.conf(macvtap={"link": "ve0", "mode": "nope"}))
    assert _names(cni.netns) == {"lo"}
    # for config versions below 1.1.0 the result has no mtu
    for version, has_mtu in (("0.4.0", False), ("1.0.0", False), ("1.1.0", True)):
        iface = cni.ok("ADD", cni.conf(version=version, mtu=1400), ifname="v0",
                       cid=f"c{version[0]}{version[2]}").out["interfaces"][-1]
        assert ("mtu" in iface) is has_mtu, (version, iface)
        cni.ok("DEL", cni.conf(version=version), ifname="v0", cid=f"c{version[0]}{version[2]}")


# 4 ------------------------------------------------------------------ existing name
def test_req04_add_of_an_existing_name_fails_and_leaves_it_alone(cni: Cni) -> None:
    cni.netns.ip("link", "add", "tap0", "type", "veth", "peer", "name", "tap0p")
    before = cni.netns.link_json("tap0")
    run = cni.fails(100, "ADD")
    assert "cni-exists" in run.out["msg"]
    assert cni.netns.link_json("tap0") == before
    # nor is a second ADD of our own device a takeover: it fails, the first stays intact
    cni.ok("ADD", ifname="tap1")
    first = cni.netns.link_json("tap1")
    cni.fails(100, "ADD", ifname="tap1", cid="other")
    assert cni.netns.link_json("tap1") == first
    assert not list(cni.state_dir.glob("*.json"))[1:], "no second record"


# 5 ------------------------------------------------------------------ the device itself
def test_req05_tap_flags_and_macvtap_node_of_the_right_device(cni: Cni, scratch: Path) -> None:
    cni.ok("ADD", cni.conf(multiQueue=True), ifname="mq0")
    data = tun_data(cni.netns, "mq0")
    assert data["type"] == "tap" and data["pi"] is False and data["vnet_hdr"] is True
    assert data["multi_queue"] is True and data["persist"] is True
    assert is_id(data["user"], 107) and is_id(data["group"], 107, group=True)
    cni.ok("ADD", cni.conf(queues=1), ifname="sq0")
    assert tun_data(cni.netns, "sq0")["multi_queue"] is False
    # macvtaps in two namespaces with the same ifindex get two nodes, each its device's
    pair = [Netns.create(), Netns.create()]
    try:
        nodes = []
        for ns in pair:
            _veth(ns, "low0")
            c = Cni(cni.plugin_dir, ns, cni.state_dir, cni.node_dir)
            res = c.ok("ADD", c.conf(macvtap={"link": "low0"}, mac=MAC), ifname="mv0",
                       cid=f"c-{ns.name}")
            node = res.out["interfaces"][-1]["tapvirtNode"]
            ifindex = ns.exec("cat", "/sys/class/net/mv0/ifindex").stdout.strip()
            dev = ns.exec("cat", f"/sys/class/net/mv0/macvtap/tap{ifindex}/dev").stdout
            st = os.lstat(node)
            assert stat.S_ISCHR(st.st_mode)
            assert f"{os.major(st.st_rdev)}:{os.minor(st.st_rdev)}" == dev.strip()
            assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (107, 107, 0o660)
            nodes.append((node, st.st_rdev, ifindex))
        assert nodes[0][2] == nodes[1][2], "same per-namespace ifindex"
        assert nodes[0][0] != nodes[1][0] and nodes[0][1] != nodes[1][1]
        for ns in pair:
            c = Cni(cni.plugin_dir, ns, cni.state_dir, cni.node_dir)
            c.ok("DEL", c.conf(macvtap={"link": "low0"}), ifname="mv0", cid=f"c-{ns.name}")
        assert not any(os.path.exists(n) for n, _, _ in nodes)
    finally:
        for ns in pair:
            ns.close()


# 6 ------------------------------------------------------------------ MTU
def test_req06_mtu_is_applied_explicitly_or_taken_from_the_bridge(cni: Cni) -> None:
    cni.ok("ADD", cni.conf(mtu=1400), ifname="m0")
    assert cni.netns.link_json("m0")["mtu"] == 1400  # type: ignore[index]
    # owner AND group AND mtu AND mac: the combination upstream's plugin ignores
    cni.ok("ADD", cni.conf(mtu=9000, mac=MAC), ifname="m1")
    got = cni.netns.link_json("m1")
    assert got is not None and got["mtu"] == 9000 and got["address"] == MAC
    cni.netns.ip("link", "add", "br0", "mtu", "1280", "type", "bridge")
    cni.ok("ADD", cni.conf(bridge="br0"), ifname="m2")
    assert cni.netns.link_json("m2")["mtu"] == 1280  # type: ignore[index]


# 7 ------------------------------------------------------------------ MAC priority
def test_req07_mac_priority_runtime_config_args_cni_args_config(cni: Cni) -> None:
    macs = {"rc": "52:54:00:00:00:01", "args": "52:54:00:00:00:02",
            "env": "52:54:00:00:00:03", "conf": "52:54:00:00:00:04"}
    layers: dict[str, Any] = {"runtimeConfig": {"mac": macs["rc"]},
                              "args": {"cni": {"mac": macs["args"]}}}
    order = ["rc", "args", "env", "conf"]
    for i, winner in enumerate(order):
        conf = cni.conf(mac=macs["conf"])
        if "rc" in order[i:]:
            conf["runtimeConfig"] = layers["runtimeConfig"]
        if "args" in order[i:]:
            conf["args"] = layers["args"]
        env_args = f"IgnoreUnknown=1;MAC={macs['env']}" if "env" in order[i:] else ""
        res = cni.ok("ADD", conf, ifname=f"mac{i}", cid=f"c{i}", args=env_args)
        assert res.out["interfaces"][-1]["mac"] == macs[winner]
        assert cni.netns.link_json(f"mac{i}")["address"] == macs[winner]  # type: ignore[index]
    cni.fails(7, "ADD", cni.conf(mac="01:00:5e:00:00:01"), ifname="bad0")


# 8 ------------------------------------------------------------------ bridge and UP
def test_req08_tap_is_up_and_enslaved_to_the_bridge_in_the_pod(cni: Cni) -> None:
    cni.netns.ip("link", "add", "br0", "type", "bridge")
    cni.ok("ADD", cni.conf(bridge="br0"))
    got: Any = cni.netns.link_json("tap0")
    assert got is not None and got["master"] == "br0" and "UP" in got["flags"]
    # a missing bridge: a spec'd own code and nothing left
    cni.fails(104, "ADD", cni.conf(bridge="nobr"), ifname="tap1", cid="c2")
    assert "tap1" not in _names(cni.netns)


# 9 ------------------------------------------------------------------ SELinux
def test_req09_selinux_context_is_honoured_or_refused_never_ignored_silently(
    cni: Cni,
) -> None:
    enabled = os.path.exists("/sys/fs/selinux/enforce")
    run = cni.run("ADD", cni.conf(selinuxContext="system_u:system_r:container_t:s0"))
    if enabled:
        assert run.code == 2, run.stdout
    else:
        assert run.rc == 0 and "selinuxContext has no effect" in run.stderr


# 10 ----------------------------------------------------------------- IPAM
def test_req10_ipam_is_refused_by_name(cni: Cni) -> None:
    run = cni.fails(2, "ADD", cni.conf(ipam={"type": "host-local"}))
    assert "ipam" in run.out["msg"] + run.out["details"]
    assert _names(cni.netns) == {"lo"}


# 11 ----------------------------------------------------------------- result
def test_req11_result_passes_prev_result_through_and_failures_leave_nothing(
    cni: Cni, scratch: Path,
) -> None:
    prev: dict[str, Any] = {"cniVersion": "1.1.0", "interfaces": [{"name": "eth0", "sandbox": "x"}],
            "ips": [{"address": "10.1.0.2/24", "interface": 0}],
            "routes": [{"dst": "0.0.0.0/0"}], "dns": {"nameservers": ["10.1.0.1"]}}
    res = cni.ok("ADD", cni.conf(prevResult=prev, mtu=1400, mac=MAC)).out
    assert res["interfaces"][0] == prev["interfaces"][0]
    assert res["ips"] == prev["ips"] and res["routes"] == prev["routes"]
    assert res["dns"] == prev["dns"]
    assert res["interfaces"][1] == {"name": "tap0", "mac": MAC, "mtu": 1400,
                                    "sandbox": cni.netns_path}
    # a macvtap whose node cannot be made (nodeDir on a file): no macvtap, no record
    _veth(cni.netns)
    blocker = scratch / "file"
    blocker.write_text("x")
    run = cni.fails(105, "ADD", cni.conf(macvtap={"link": "ve0"}, mac=MAC,
                                         nodeDir=str(blocker)), ifname="mv0", cid="c2")
    assert "cni-node" in run.out["msg"] or "node" in run.out["details"]
    assert "mv0" not in _names(cni.netns)
    assert len(list(cni.state_dir.glob("*.json"))) == 1  # only tap0's


# 12 ----------------------------------------------------------------- CHECK
def test_req12_check_verifies_what_add_made_and_finds_drift(cni: Cni) -> None:
    cni.netns.ip("link", "add", "br0", "type", "bridge")
    conf = cni.conf(bridge="br0", mtu=1400, multiQueue=True)
    result = cni.ok("ADD", conf).out
    cni.fails(7, "CHECK", conf)  # no prevResult
    checked = {**conf, "prevResult": result}
    cni.ok("CHECK", checked)
    drifts = [
        (("link", "set", "tap0", "mtu", "1300"), "mtu"),
        (("link", "set", "tap0", "nomaster"), "bridge"),
        (("link", "set", "tap0", "down"), "up"),
        (("link", "set", "tap0", "address", "52:54:00:99:99:99"), "mac"),
        (("link", "set", "tap0", "alias", "not ours"), "mark"),
    ]
    for cmd, field in drifts:
        cni.netns.ip(*cmd)
        run = cni.fails(102, "CHECK", checked)
        assert field in run.out["details"], (field, run.out)
        cni.ok("DEL", conf)
        if field == "mark":  # an unmarked device is never deleted: clean it by hand
            cni.netns.ip("link", "del", "tap0")
        result = cni.ok("ADD", conf).out
        checked = {**conf, "prevResult": result}
    # kind, owner, group, multi_queue: a device of the right name but made differently
    cni.ok("DEL", conf)
    cni.netns.ip("tuntap", "add", "mode", "tap", "name", "tap0", "user", "108")
    cni.netns.ip("link", "set", "tap0", "master", "br0", "up", "mtu", "1400")
    run = cni.fails(102, "CHECK", checked)
    for field in ("owner", "group", "multi_queue", "mark"):
        assert field in run.out["details"], field
    # kind: not a tap at all
    cni.netns.ip("link", "del", "tap0")
    cni.netns.ip("link", "add", "tap0", "type", "veth", "peer", "name", "tap0p")
    assert "kind" in cni.fails(102, "CHECK", checked).out["details"]
    # the result must name the interface in this sandbox
    bad = {**conf, "prevResult": {**result, "interfaces": [{"name": "tap0", "sandbox": "/x"}]}}
    cni.fails(102, "CHECK", bad)


# 13 ----------------------------------------------------------------- DEL
def test_req13_del_is_idempotent_and_survives_a_missing_netns(cni: Cni) -> None:
    cni.ok("ADD")
    assert "tap0" in _names(cni.netns)
    cni.ok("DEL")
    assert "tap0" not in _names(cni.netns)
    cni.ok("DEL")  # again
    cni.ok("DEL", netns="")  # no CNI_NETNS
    cni.ok("DEL", drop=("CNI_NETNS",))
    cni.ok("DEL", netns="/run/netns/tv-does-not-exist")
    cni.ok("DEL", cni.conf(version="0.4.0"))
    # a device of that name not made by us for this container stays
    cni.netns.ip("tuntap", "add", "mode", "tap", "name", "tap0")
    cni.ok("DEL")
    assert "tap0" in _names(cni.netns)
    assert not list(cni.state_dir.glob("*.json"))


# 14 ----------------------------------------------------------------- GC
def test_req14_gc_removes_only_what_it_made_for_stale_attachments(cni: Cni) -> None:
    _veth(cni.netns)
    cni.ok("ADD", ifname="keep0", cid="alive")
    cni.ok("ADD", ifname="gone0", cid="stale")
    cni.ok("ADD", cni.conf(macvtap={"link": "ve0"}, mac=MAC), ifname="gone1", cid="stale")
    node = next(cni.node_dir.rglob("cni.gone1"))
    cni.netns.ip("tuntap", "add", "mode", "tap", "name", "foreign0")
    gc = cni.conf()
    gc["cni.dev/valid-attachments"] = [{"containerID": "alive", "ifname": "keep0"}]
    cni.fails(1, "GC", {**gc, "cniVersion": "1.0.0"})
    cni.ok("GC", gc, drop=("CNI_CONTAINERID", "CNI_IFNAME", "CNI_NETNS"))
    names = _names(cni.netns)
    assert {"keep0", "foreign0"} <= names and not {"gone0", "gone1"} & names
    assert not node.exists()
    assert len(list(cni.state_dir.glob("*.json"))) == 1
    # a node left by a crash (no record) goes too; with a vanished namespace likewise
    other = Netns.create()
    c = Cni(cni.plugin_dir, other, cni.state_dir, cni.node_dir)
    _veth(other)
    c.ok("ADD", c.conf(macvtap={"link": "ve0"}, mac=MAC), ifname="mv9", cid="ghost")
    other.close()
    cni.ok("GC", gc)
    assert not list(cni.node_dir.rglob("cni.mv9"))
    assert len(list(cni.state_dir.glob("*.json"))) == 1


def test_tapvirt_prep_gc_never_removes_a_live_pod_node(cni: Cni, scratch: Path) -> None:
    """A pod's macvtap lives in an unnamed pod namespace, which tapvirt-prep's gc cannot
    see: were the pod node directory collected by prep's gc, `tapvirt-prep gc` would call
    the live node stale and unlink it under the running pod. The directory is still
    recorded for revoking stale nodes when the device number is handed out again."""
    from tapvirt.host import privnodes

    _veth(cni.netns)
    cni.ok("ADD", cni.conf(macvtap={"link": "ve0"}, mac=MAC), ifname="mv0", cid="pod1")
    node = next(cni.node_dir.rglob("cni.mv0"))
    assert str(node.parent) in privnodes.registered_dirs()
    assert str(node.parent) not in privnodes.registered_dirs(collected_only=True)
    policy = scratch / "prep.toml"
    policy.write_text("")
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "PYTHONPATH": str(SRC), "LANG": "C.UTF-8"}
    proc = subprocess.run([sys.executable, "-m", "tapvirt.cli.prep", "gc", "--policy",
                           str(policy), "--log-file", str(scratch / "prep.log"), "--json"],
                          capture_output=True, text=True, env=env, timeout=60, check=False)
    assert proc.returncode == 0, (proc.stdout, proc.stderr)
    removed = [r["node"] for r in json.loads(proc.stdout)["removed"]]
    assert str(node) not in removed and node.exists()
    cni.ok("DEL", cni.conf(macvtap={"link": "ve0"}), ifname="mv0", cid="pod1")
    assert not node.exists()


# 15 ----------------------------------------------------------------- STATUS
def test_req15_status_is_50_when_the_tun_clone_device_cannot_be_opened(cni: Cni) -> None:
    cni.ok("STATUS", drop=("CNI_CONTAINERID", "CNI_IFNAME", "CNI_NETNS"))
    cni.fails(1, "STATUS", cni.conf(version="1.0.0"))
    # a private mount namespace where /dev/net has no tun node
    run = cni.run("STATUS", argv_prefix=("unshare", "-m", "sh", "-c",
                                         'mount -t tmpfs none /dev/net && exec "$0"'))
    assert run.code == 50, (run.stdout, run.stderr)
    assert "cni-not-available" in run.out["msg"]


def test_concurrent_adds_in_one_namespace_are_serialised(cni: Cni) -> None:
    """Runtimes never run two operations for one container at once, but they do for
    different ones: all succeed, each gets its device."""
    errors: list[str] = []

    def one(i: int) -> None:
        run = cni.run("ADD", ifname=f"c{i}", cid=f"cid{i}")
        if run.rc != 0:
            errors.append(run.stdout)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert {f"c{i}" for i in range(4)} <= _names(cni.netns)
