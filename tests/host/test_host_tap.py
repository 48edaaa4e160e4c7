"""LinuxHost.open_tap, unprivileged, on taps root precreated in a test namespace: good
states attach as asked, bad states raise the right code, no device changes, no fd leaks."""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

import pytest

from tests.host.hostside import (
    World,
    build_world,
    run_as_user,
    start_holder,
    stop,
)
from tests.support.sandbox import AsUser, Netns, User, make_group

IFF_TAP, IFF_NO_PI, IFF_MULTI_QUEUE, IFF_VNET_HDR = 0x2, 0x1000, 0x100, 0x4000


@pytest.fixture
def group(unpriv_user: User) -> int:
    name, gid = make_group()
    unpriv_user.extra_groups.append(name)
    return gid


@pytest.fixture
def world(netns: Netns, unpriv_user: User, group: int) -> World:
    return build_world(netns, unpriv_user.uid, group)


def _open(name: str, node: Path | str, *, vnet_hdr: bool = True, queues: int = 1,
          hold: bool = False) -> dict[str, Any]:
    return {"op": "open_tap", "name": name, "tun_node": str(node), "vnet_hdr": vnet_hdr,
            "queues": queues, "hold": hold}


def test_attach_good_taps(as_user: AsUser, world: World, tun_node: Path) -> None:
    before = world.snapshots()
    results = run_as_user(as_user, [
        _open("tapu", tun_node),
        _open("tapmq", tun_node, queues=4),
        _open("tapmac", tun_node),
        _open("tapdown", tun_node),  # down is a warning for checks, not an open failure
        _open("tapu", tun_node, vnet_hdr=False),
        _open("tapu", tun_node),  # closed again: a second guest can attach later
    ])
    for res in results:
        assert "error" not in res, res
        assert res["leaked"] == []
        assert all(res["cloexec"])
        assert all(size == 12 for size in res["hdrsz"])
    names = ["tapu", "tapmq", "tapmac", "tapdown", "tapu", "tapu"]
    for res, name in zip(results, names, strict=True):
        assert {n for n, _ in res["iff"]} == {name}
    assert len(results[1]["iff"]) == 4
    assert all(f & IFF_MULTI_QUEUE for _, f in results[1]["iff"])
    assert results[0]["iff"][0][1] & (IFF_TAP | IFF_NO_PI | IFF_VNET_HDR) == (
        IFF_TAP | IFF_NO_PI | IFF_VNET_HDR)
    assert not results[4]["iff"][0][1] & IFF_VNET_HDR
    # The vnet_hdr bit the last attach asked for sticks in the device (kernel, §6): the
    # last op asked for it again, so the device is exactly as root created it.
    assert world.snapshots() == before


def test_group_only_tap(as_user: AsUser, world: World, tun_node: Path, group: int) -> None:
    denied = run_as_user(as_user, [_open("tapg", tun_node)])[0]
    assert denied["error"]["code"] == "device-foreign-owner"
    assert f"group {group}" in denied["error"]["cause"]
    as_user.groups = [group]  # as a supplementary group
    ok = run_as_user(as_user, [_open("tapg", tun_node)])[0]
    assert "error" not in ok and ok["iff"][0][0] == "tapg"
    # Owner AND group set: the kernel wants both to match (tun_not_capable()).
    world.netns.ip("tuntap", "add", "dev", "tapboth", "mode", "tap", "user",
                   str(world.uid), "group", "0")
    both = run_as_user(as_user, [_open("tapboth", tun_node)])[0]
    assert both["error"]["code"] == "device-foreign-owner"
    assert "belongs to group 0" in both["error"]["cause"]
    assert "owned by" not in both["error"]["cause"]
    as_user.groups, as_user.gid = [], group  # as the primary gid
    both_ok = run_as_user(as_user, [_open("tapg", tun_node), _open("tapu", tun_node)])
    assert all("error" not in r for r in both_ok), both_ok


def test_every_bad_state_has_its_code(as_user: AsUser, world: World, tun_node: Path,
                                      unpriv_user: User, scratch: Path) -> None:
    root_node = scratch / "tun-root"
    os.mknod(root_node, 0o600 | stat.S_IFCHR, os.makedev(10, 200))
    not_a_node = scratch / "plainfile"
    not_a_node.write_text("")
    not_a_node.chmod(0o666)
    before = world.snapshots()
    cases = [
        (_open("nosuch", tun_node), "device-missing", "ip tuntap add dev nosuch"),
        (_open("tapf", tun_node), "device-foreign-owner", "owned by uid 0"),
        (_open("tapmq", tun_node, queues=1), "queues-mismatch", "multi_queue"),
        (_open("tapu", tun_node, queues=2), "queues-mismatch", "single-queue"),
        (_open("tun0", tun_node), "device-wrong-kind", "TUN-mode"),
        (_open("br0", tun_node), "device-wrong-kind", "a bridge"),
        (_open("ve0", tun_node), "device-wrong-kind", "a veth"),
        (_open("mvt0", tun_node), "device-wrong-kind", "macvtap"),
        (_open("tapu", scratch / "nonode"), "tun-node-inaccessible", "does not exist"),
        (_open("tapu", root_node), "tun-node-inaccessible", "owned by uid 0"),
        (_open("tapu", not_a_node), "tun-node-inaccessible", "not the tun clone"),
        (_open("bad/name", tun_node), "invalid-name", "'/'"),
        (_open("tapmq", tun_node, queues=3), "", ""),  # sanity: good op between bad ones
    ]
    results = run_as_user(as_user, [op for op, _, _ in cases])
    for (op, code, text), res in zip(cases, results, strict=True):
        assert res["leaked"] == [], (op, res)
        if not code:
            assert "error" not in res
            continue
        err = res["error"]
        assert err["code"] == code, (op, err)
        assert text in err["cause"] + err["fix"], (op, err)
        assert err["fix"], op
        assert "Errno" not in err["message"], err
    assert world.snapshots() == before


def test_busy_names_the_holder(as_user: AsUser, world: World, tun_node: Path) -> None:
    holder = start_holder(as_user, [_open("tapu", tun_node, hold=True),
                                    _open("tapdown", tun_node, hold=True)])
    try:
        results = run_as_user(as_user, [
            _open("tapu", tun_node), _open("tapmq", tun_node, queues=2),
            {"op": "lookup", "name": "tapu"}, {"op": "lookup", "name": "tapdown"},
            {"op": "holders", "name": "tapu"}, {"op": "holders", "name": "tapdown"},
            {"op": "holders", "name": "tapmac"}])
        err = results[0]["error"]
        assert err["code"] == "device-busy"
        assert err["details"]["holders"] == [holder.pid]
        assert f"pid {holder.pid}" in err["cause"]
        assert results[0]["leaked"] == []
        assert "error" not in results[1]  # other taps are unaffected
        # The kernel reports no queue count for single-queue taps: carrier stands in,
        # also on a tap that is administratively down.
        assert results[2]["info"]["tun"]["num_queues"] == 1
        assert results[3]["info"]["tun"]["num_queues"] == 1
        assert [r["pids"] for r in results[4:]] == [[holder.pid], [holder.pid], []]
    finally:
        stop(holder)
    # Once the holder is gone the tap is free again.
    again = run_as_user(as_user, [{"op": "holders", "name": "tapu"},
                                  {"op": "lookup", "name": "tapu"}, _open("tapu", tun_node)])
    assert again[0]["pids"] == []
    assert again[1]["info"]["tun"]["num_queues"] == 0
    assert "error" not in again[2]


def test_multiqueue_tap_shares_queues_across_processes(as_user: AsUser, world: World,
                                                       tun_node: Path) -> None:
    holder = start_holder(as_user, [_open("tapmq", tun_node, queues=2, hold=True)])
    try:
        res = run_as_user(as_user, [_open("tapmq", tun_node, queues=2),
                                    {"op": "holders", "name": "tapmq"}])
        assert "error" not in res[0]
        assert res[1]["pids"] == [holder.pid]
    finally:
        stop(holder)


def test_identity_and_vhost(as_user: AsUser, unpriv_user: User) -> None:
    ident, vhost = run_as_user(as_user, [{"op": "identity"}, {"op": "vhost"}])
    assert ident["uid"] == unpriv_user.uid
    assert ident["gids"] == [unpriv_user.gid]
    assert ident["net_admin"] is False
    assert vhost["available"] is os.path.exists("/dev/vhost-net")


def test_node_status(as_user: AsUser, tun_node: Path, unpriv_user: User,
                     scratch: Path) -> None:
    res = run_as_user(as_user, [{"op": "node_status", "path": str(tun_node)},
                                {"op": "node_status", "path": str(scratch / "missing")},
                                {"op": "node_status", "path": "/dev/net/tun"}])
    mine = res[0]["status"]
    assert mine["is_char_device"] and mine["rdev"] == [10, 200]
    assert (mine["uid"], mine["mode"], mine["readable_writable"]) == (
        unpriv_user.uid, 0o600, True)
    assert res[1]["status"] is None
    tun = res[2]["status"]
    assert tun["readable_writable"] is bool(os.stat("/dev/net/tun").st_mode & 0o006 == 0o006)
