"""tapvirt-cni as a runtime uses it: every verb at every configuration version it speaks,
results checked against the shapes of CNI spec §5 (a schema written from the spec's
text), and in chains with Debian's reference plugins run by a libcni-style runner
(tests/cni/runner.py): `bridge` + `host-local` before it, `tuning` after it. The chain's
"host" is a test namespace, so the bridge plugin's host side never reaches the root
namespace."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from tests.cni.conftest import DEBIAN_PLUGINS, Cni, is_id
from tests.cni.runner import CniFailed, Runtime
from tests.support.sandbox import Netns

jsonschema = pytest.importorskip("jsonschema")

VERSIONS = ("0.4.0", "1.0.0", "1.1.0")
MAC_RE = "^[0-9a-f]{2}(:[0-9a-f]{2}){5}$"
# CNI spec 1.1.0 §5 "Success" and "Error" (and 0.4.0's ips[].version).
RESULT = {
    "type": "object", "required": ["cniVersion"],
    "properties": {
        "cniVersion": {"enum": list(VERSIONS)},
        "interfaces": {"type": "array", "items": {
            "type": "object", "required": ["name"],
            "properties": {"name": {"type": "string", "minLength": 1},
                           "mac": {"type": "string", "pattern": MAC_RE},
                           "mtu": {"type": "integer", "minimum": 68},
                           "sandbox": {"type": "string"},
                           "socketPath": {"type": "string"}, "pciID": {"type": "string"}}}},
        "ips": {"type": "array", "items": {
            "type": "object", "required": ["address"],
            "properties": {"address": {"type": "string"}, "gateway": {"type": "string"},
                           "interface": {"type": "integer", "minimum": 0}}}},
        "routes": {"type": "array"}, "dns": {"type": "object"},
    },
}
ERROR = {"type": "object", "required": ["cniVersion", "code", "msg"],
         "additionalProperties": False,
         "properties": {"cniVersion": {"type": "string"}, "code": {"type": "integer"},
                        "msg": {"type": "string"}, "details": {"type": "string"}}}
VERSION_OUT = {"type": "object", "required": ["cniVersion", "supportedVersions"],
               "additionalProperties": False,
               "properties": {"cniVersion": {"type": "string"},
                              "supportedVersions": {"type": "array",
                                                    "items": {"type": "string"}}}}


@pytest.mark.parametrize("version", VERSIONS)
def test_every_verb_at_every_version(cni: Cni, version: str) -> None:
    cni.netns.ip("link", "add", "br0", "type", "bridge")
    conf = cni.conf(version=version, bridge="br0", mtu=1450)
    jsonschema.validate(cni.ok("VERSION", {"cniVersion": version}).out, VERSION_OUT)
    result = cni.ok("ADD", conf).out
    jsonschema.validate(result, RESULT)
    assert result["cniVersion"] == version
    assert ("mtu" in result["interfaces"][0]) is (version == "1.1.0")
    cni.ok("CHECK", {**conf, "prevResult": result})
    cni.ok("DEL", {**conf, "prevResult": result})
    cni.ok("DEL", {**conf, "prevResult": result})
    cni.fails(102, "CHECK", {**conf, "prevResult": result})  # gone: CHECK says so
    for verb in ("GC", "STATUS"):
        run = cni.run(verb, conf, drop=("CNI_CONTAINERID", "CNI_IFNAME", "CNI_NETNS"))
        if version == "1.1.0":
            assert run.rc == 0 and run.stdout == "", run.stdout
        else:
            assert run.code == 1
            jsonschema.validate(run.out, ERROR)
    assert cni.netns.link_json("tap0") is None


def test_every_error_is_the_spec_error_object_on_stdout(cni: Cni) -> None:
    cases: list[tuple[int, str, Any, dict[str, Any]]] = [
        (4, "ADD", None, {"drop": ("CNI_IFNAME",)}),
        (6, "ADD", b"\xff\xfe", {}),
        (6, "ADD", b"x" * (1 << 20 + 1), {}),
        (1, "ADD", cni.conf(version="0.2.0"), {}),
        (7, "ADD", cni.conf(bridge=7), {}),
        (7, "ADD", cni.conf(owner=True), {}),
        (7, "ADD", cni.conf(name="bad name"), {}),
        (7, "ADD", cni.conf(nodeDir="relative/dir"), {}),
        (7, "ADD", cni.conf(macvtap={"link": "eth0", "extra": 1}), {}),
        (2, "ADD", cni.conf(ipam={"type": "host-local"}), {}),
        (8, "ADD", None, {"netns": "/proc/self/ns/net"}),  # the plugin's own
        (8, "ADD", None, {"netns": "/etc/hostname"}),
        (8, "ADD", None, {"netns": "/run/netns/tv-absent"}),
        (104, "ADD", cni.conf(macvtap={"link": "nolink"}), {}),
        (101, "ADD", cni.conf(policy="/nonexistent/prep.toml"), {}),
    ]
    for code, verb, conf, kw in cases:
        run = cni.fails(code, verb, conf, **kw)
        jsonschema.validate(run.out, ERROR)
        assert "tapvirt-cni [" in run.out["msg"] and "fix:" in run.out["details"]
        assert "Traceback" not in run.stderr
    assert {x["ifname"] for x in json.loads(cni.netns.ip("-j", "link").stdout)} == {"lo"}
    assert not cni.state_dir.exists() or not list(cni.state_dir.iterdir())


def test_a_policy_limits_what_pods_get(cni: Cni, scratch: Path) -> None:
    policy = scratch / "policy.toml"
    policy.write_text('[[allow]]\nusers = ["107"]\nkinds = ["tap"]\nnames = ["tap*"]\n'
                      'netns = ["cni"]\nmax_devices = 1\nmax_queues = 2\ndevice_groups = ["107"]\n'
                      f'[settings]\nlog_file = "{scratch}/decisions.log"\n')
    policy.chmod(0o644)
    conf = cni.conf(policy=str(policy))
    cni.ok("ADD", conf)
    cni.fails(101, "ADD", conf, ifname="tap1", cid="c2")  # max_devices
    cni.fails(101, "ADD", conf, ifname="other0", cid="c3")  # names
    cni.fails(101, "ADD", {**conf, "queues": 4}, ifname="tap2", cid="c4")  # max_queues
    cni.fails(7, "ADD", {**conf, "owner": None}, ifname="tap3", cid="c5")
    log = (scratch / "decisions.log").read_text()
    # one JSON event per line (docs/prep.md, the decision log)
    events = [json.loads(line.split(" ", 2)[2]) for line in log.splitlines()]
    verdicts = {e["event"] for e in events if e["event"] in ("allow", "deny")}
    assert verdicts == {"allow", "deny"}
    # the pod's uid, by name where this machine has one for it
    assert all(is_id(e["requester"], 107) for e in events if e["event"] in ("allow", "deny"))
    policy.chmod(0o666)  # a policy others could write decides nothing
    cni.fails(101, "ADD", conf, ifname="tap4", cid="c6")


# ---------------------------------------------------------------- chains
@pytest.fixture
def host_ns() -> Any:
    ns = Netns.create("tv-chh")
    yield ns
    ns.close()


def _runtime(conflist: dict[str, Any], cni: Cni, host: Netns, scratch: Path) -> Runtime:
    if not os.access(f"{DEBIAN_PLUGINS}/bridge", os.X_OK):
        pytest.skip("needs Debian's containernetworking-plugins (scripts/install-deps)")
    return Runtime(conflist, [str(cni.plugin_dir), DEBIAN_PLUGINS], scratch / "cache",
                   host_netns=host.name)


def test_chained_after_bridge_and_host_local_and_before_tuning(
    cni: Cni, host_ns: Netns, scratch: Path
) -> None:
    conflist = {"cniVersion": "1.0.0", "name": "tvchain", "plugins": [
        {"type": "bridge", "bridge": "tvcni0", "isGateway": True, "ipMasq": False,
         "ipam": {"type": "host-local", "subnet": "10.213.7.0/24",
                  "dataDir": str(scratch / "ipam")}},
        {"type": "tapvirt-cni", "owner": 107, "group": 107, "device": "tap0", "mtu": 1400,
         "stateDir": str(cni.state_dir), "nodeDir": str(cni.node_dir)},
        {"type": "tuning", "sysctl": {"net.ipv4.conf.eth0.arp_notify": "1"}},
    ]}
    rt = _runtime(conflist, cni, host_ns, scratch)
    result = rt.add("ctr9", cni.netns_path, "eth0")
    jsonschema.validate(result, RESULT)
    names = [i["name"] for i in result["interfaces"]]
    assert names[0] == "tvcni0" and names[2:] == ["eth0", "tap0"], names
    # the bridge plugin's IP entry still points at its eth0 through our append
    assert result["ips"][0]["interface"] == 2 and result["ips"][0]["address"].startswith(
        "10.213.7.")
    # what tapvirt-cni got as prevResult was the bridge plugin's result, unchanged
    ours = next(r for r in rt.runs if r.plugin == "tapvirt-cni" and r.command == "ADD")
    bridge_out = next(r for r in rt.runs if r.plugin == "bridge" and r.command == "ADD").out
    assert ours.stdin["prevResult"] == bridge_out
    assert cni.netns.exec("cat", "/proc/sys/net/ipv4/conf/eth0/arp_notify").stdout == "1\n"
    tap = cni.netns.link_json("tap0")
    assert tap is not None and tap["mtu"] == 1400
    assert host_ns.link_json("tvcni0") is not None  # the "host" side is in the test ns
    rt.check("ctr9", cni.netns_path, "eth0")
    cni.netns.ip("link", "set", "tap0", "mtu", "1300")
    with pytest.raises(CniFailed) as failed:
        rt.check("ctr9", cni.netns_path, "eth0")
    assert failed.value.run.plugin == "tapvirt-cni" and failed.value.code == 102
    rt.delete("ctr9", cni.netns_path, "eth0")
    assert [r.plugin for r in rt.runs if r.command == "DEL"] == [
        "tuning", "tapvirt-cni", "bridge"]
    assert cni.netns.link_json("tap0") is None and cni.netns.link_json("eth0") is None
    assert not list((scratch / "ipam" / "tvchain").glob("10.*"))
    rt.delete("ctr9", cni.netns_path, "eth0")  # again, without a cached result


def test_tuning_after_tapvirt_cni_changes_the_tap_and_check_follows_the_result(
    cni: Cni, host_ns: Netns, scratch: Path
) -> None:
    conflist = {"cniVersion": "1.0.0", "name": "tvtune", "plugins": [
        {"type": "tapvirt-cni", "owner": 107, "group": 107, "multiQueue": True,
         "stateDir": str(cni.state_dir), "nodeDir": str(cni.node_dir),
         "capabilities": {"mac": True}},
        {"type": "tuning", "mac": "52:54:00:77:00:01", "promisc": True},
    ]}
    rt = _runtime(conflist, cni, host_ns, scratch)
    result = rt.add("ctr8", cni.netns_path, "tap0",
                    capability_args={"mac": "52:54:00:77:00:09"})
    ours = next(r for r in rt.runs if r.plugin == "tapvirt-cni").out
    assert ours["interfaces"][0]["mac"] == "52:54:00:77:00:09"  # runtimeConfig.mac
    tap = cni.netns.link_json("tap0")
    assert tap is not None and tap["address"] == "52:54:00:77:00:01"  # tuning's
    assert result["interfaces"][0]["mac"] == "52:54:00:77:00:01"
    assert tap["linkinfo"]["info_data"]["multi_queue"] is True  # type: ignore[index]
    rt.check("ctr8", cni.netns_path, "tap0")  # the final result's MAC is what counts
    rt.delete("ctr8", cni.netns_path, "tap0")
    assert cni.netns.link_json("tap0") is None
