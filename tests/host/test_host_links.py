"""LinuxHost.lookup, run unprivileged in a test namespace, against `ip -d -j link`."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.host.hostside import GUEST_MAC, build_world, gid_of, run_as_user, uid_of
from tests.support.sandbox import AsUser, Netns, User, make_group, run, unprivileged_python


@pytest.fixture
def group(unpriv_user: User) -> int:
    name, gid = make_group()
    unpriv_user.extra_groups.append(name)
    return gid


def _expected(netns: Netns, dev: str) -> dict[str, Any]:
    data: dict[str, Any] = netns.link_json(dev)  # type: ignore[assignment]
    linkinfo = data.get("linkinfo", {})
    return {"data": data, "kind": linkinfo.get("info_kind", ""),
            "info": linkinfo.get("info_data", {})}


def test_lookup_matches_ip(as_user: AsUser, netns: Netns, unpriv_user: User,
                           group: int) -> None:
    world = build_world(netns, unpriv_user.uid, group)
    names = [*world.devices, "lo"]
    results = run_as_user(as_user, [{"op": "lookup", "name": n} for n in names])
    kinds = {"tapu": "tap", "tapmq": "tap", "tapmac": "tap", "tapdown": "tap", "tapg": "tap",
             "tapf": "tap", "tun0": "tun", "br0": "bridge", "ve0": "veth", "ve1": "veth",
             "mvt0": "macvtap", "lo": "other"}
    for name, res in zip(names, results, strict=True):
        info = res["info"]
        exp = _expected(netns, name)
        data = exp["data"]
        assert info["name"] == name
        assert info["ifindex"] == data["ifindex"], name
        assert info["kind"] == kinds[name], name
        assert info["kind_name"] == exp["kind"], name
        assert info["mtu"] == data["mtu"], name
        assert info["mac"] == data.get("address", ""), name
        assert info["operstate"] == data["operstate"].lower(), name
        assert bool(info["flags"] & 1) == ("UP" in data["flags"]), name
        assert info["master"] == data.get("master"), name
        if exp["kind"] == "tun":
            tun, ii = info["tun"], exp["info"]
            assert tun["owner"] == (uid_of(ii["user"]) if "user" in ii else None), name
            assert tun["group"] == (gid_of(ii["group"]) if "group" in ii else None), name
            for key in ("multi_queue", "vnet_hdr", "persist", "pi"):
                assert tun[key] == ii[key], (name, key)
        else:
            assert info["tun"] is None
    by_name = {n: r["info"] for n, r in zip(names, results, strict=True)}
    assert by_name["tapu"]["master"] == "br0"
    assert by_name["tapmac"]["mac"] == GUEST_MAC
    assert by_name["tapdown"]["operstate"] == "down" and not by_name["tapdown"]["flags"] & 1
    assert by_name["tapf"]["tun"]["owner"] == 0
    assert by_name["tapg"]["tun"]["owner"] is None
    assert by_name["tapg"]["tun"]["group"] == group
    assert by_name["tapmq"]["tun"]["multi_queue"] is True
    assert by_name["ve0"]["link"] == "ve1" and by_name["ve1"]["link"] == "ve0"
    mvt = by_name["mvt0"]
    assert mvt["ifindex"] == world.macvtap_index
    assert mvt["link"] == "ve0" and mvt["macvtap_mode"] == "bridge"
    assert mvt["mac"] == "52:54:00:aa:bb:cc" and mvt["mtu"] == 1400
    sysdev = netns.exec("cat", f"/sys/class/net/mvt0/macvtap/tap{world.macvtap_index}/dev")
    assert mvt["macvtap_dev"] == [int(x) for x in sysdev.stdout.strip().split(":")]
    assert all(r["leaked"] == [] for r in results)


def test_lookup_missing_and_invalid(as_user: AsUser) -> None:
    results = run_as_user(as_user, [
        {"op": "lookup", "name": "nosuchdev"},
        {"op": "lookup", "name": "x" * 16},
        {"op": "lookup", "name": "a/b"},
        {"op": "lookup", "name": ""},
    ])
    assert results[0]["info"] is None and "error" not in results[0]
    assert [r["error"]["code"] for r in results[1:]] == ["invalid-name"] * 3
    assert "at most 15" in results[1]["error"]["cause"]


def test_veth_peer_in_other_namespace_has_no_link_name(as_user: AsUser, netns: Netns) -> None:
    other = Netns.create()
    try:
        netns.ip("link", "add", "vx0", "type", "veth", "peer", "name", "vx1",
                 "netns", other.name)
        res = run_as_user(as_user, [{"op": "lookup", "name": "vx0"}])[0]["info"]
        assert res["kind"] == "veth"
        # The peer's ifindex belongs to the other namespace: never resolved here.
        assert res["link"] is None
    finally:
        other.close()


def test_macvtap_dev_untrusted_when_sysfs_is_another_namespace(
        as_user: AsUser, netns: Netns, unpriv_user: User) -> None:
    """A process that entered our namespace without remounting /sys sees another
    namespace's sysfs; a same-named macvtap with the same ifindex there must not lend us
    its device number."""
    decoy = Netns.create()
    try:
        for ns in (netns, decoy):  # identical layouts: same names, same ifindex
            ns.ip("link", "add", "vz0", "type", "veth", "peer", "name", "vz1")
            ns.ip("link", "add", "link", "vz0", "name", "mvt0", "type", "macvtap")
        ours, theirs = netns.link_json("mvt0"), decoy.link_json("mvt0")
        assert ours is not None and theirs is not None
        assert ours["ifindex"] == theirs["ifindex"]
        code = ("import json; from tapvirt.host.linux import LinuxHost;"
                "i = LinuxHost().lookup('mvt0');"
                "print(json.dumps([i.ifindex, i.mac, i.macvtap_dev]))")
        plain = AsUser(unpriv_user, None, as_user.code)
        # `ip netns exec decoy` mounts the decoy's sysfs; nsenter then changes only the
        # network namespace, so /sys/class/net/mvt0 is the decoy's device.
        proc = run(["ip", "netns", "exec", decoy.name, "nsenter",
                    f"--net=/run/netns/{netns.name}",
                    *plain.argv([unprivileged_python(), "-c", code])])
        ifindex, mac, dev = json.loads(proc.stdout)
        assert (ifindex, mac) == (ours["ifindex"], ours["address"])
        assert dev is None
        # Inside its own namespace view the same lookup does find the number.
        direct = as_user.python(code, check=True)
        assert json.loads(direct.stdout)[2] is not None
    finally:
        decoy.close()


def test_lookup_is_one_request_whatever_the_number_of_links(as_user: AsUser,
                                                             netns: Netns) -> None:
    """O(1) by construction: one RTM_GETLINK by name (never a dump) and one reply, also
    with 1,000 other links; the master costs one more lookup by index. Timing: bench/."""
    netns.ip("link", "add", "br0", "type", "bridge")
    netns.ip("tuntap", "add", "dev", "tapa", "mode", "tap")
    netns.ip("tuntap", "add", "dev", "tapb", "mode", "tap")
    netns.ip("link", "set", "tapb", "master", "br0")
    fill = ("import fcntl, os, struct\n"
            "for i in range(1000):\n"
            "    fd = os.open('/dev/net/tun', os.O_RDWR)\n"
            "    fcntl.ioctl(fd, 0x400454CA, struct.pack('16sH22x', b'f%d' % i, 0x9002))\n"
            "    fcntl.ioctl(fd, 0x400454CB, 1)\n"
            "    os.close(fd)\n")
    netns.exec("python3", "-c", fill)
    code = (
        "import json\n"
        "from tapvirt.host import netlink\n"
        "from tapvirt.host.linux import LinuxHost\n"
        "calls = []\n"
        "orig = netlink.RtNetlink._request\n"
        "def spy(self, t, f, body):\n"
        "    out = orig(self, t, f, body)\n"
        "    calls.append([t, f, len(out)])\n"
        "    return out\n"
        "netlink.RtNetlink._request = spy\n"
        "h = LinuxHost()\n"
        "res = []\n"
        "for name in ('tapa', 'tapb', 'f999', 'nosuch'):\n"
        "    calls.clear()\n"
        "    info = h.lookup(name)\n"
        "    res.append([info and info.master, list(calls)])\n"
        "print(json.dumps(res))\n"
    )
    res = json.loads(as_user.python(code, check=True).stdout)
    nlm_f_dump = 0x300
    assert res[0] == [None, [[18, 0, 1]]]
    assert res[1] == ["br0", [[18, 0, 1], [18, 0, 1]]]
    assert res[2] == [None, [[18, 0, 1]]]
    assert res[3][0] is None  # ENODEV: raised inside _request, not counted
    assert all(not call[1] & nlm_f_dump for r in res for call in r[1])


def test_reused_socket_skips_stale_replies(as_user: AsUser, netns: Netns) -> None:
    netns.ip("tuntap", "add", "dev", "tapa", "mode", "tap")
    code = (
        "import json, struct\n"
        "from tapvirt.host import netlink as nl\n"
        "r = nl.RtNetlink()\n"
        "sock = r._socket()\n"
        "body = struct.pack('=BxHiII', 0, 0, 1, 0, 0)\n"
        "for seq in (4242, 4243):  # abandoned requests: their replies wait in the socket\n"
        "    sock.send(struct.pack('=IHHII', 16 + len(body), 18, 1, seq, 0) + body)\n"
        "a = r.get_link(name='tapa')\n"
        "b = r.get_link(name='nosuch')\n"
        "c = r.get_link(index=a.ifindex)\n"
        "print(json.dumps([a.name, b, c.name]))\n"
    )
    assert json.loads(as_user.python(code, check=True).stdout) == ["tapa", None, "tapa"]
