"""LinuxHost.open_macvtap, unprivileged: /dev/tap<ifindex> chowned by root, private
nodes, and nodes that belong to another device or another namespace's macvtap."""

from __future__ import annotations

import os
import stat
import tempfile
from pathlib import Path
from typing import Any

import pytest

from tests.host.hostside import (
    World,
    build_world,
    macvtap_rdev,
    random_ifindex,
    remove_node_if,
    run_as_root,
    run_as_user,
)
from tests.support.sandbox import AsUser, Netns, User, make_group

IFF_MULTI_QUEUE, IFF_VNET_HDR = 0x100, 0x4000


@pytest.fixture
def world(netns: Netns, unpriv_user: User) -> Any:
    name, gid = make_group()
    unpriv_user.extra_groups.append(name)
    w = build_world(netns, unpriv_user.uid, gid)
    rdev = macvtap_rdev(netns, "mvt0", w.macvtap_index)
    yield w
    netns.close()
    remove_node_if(Path(f"/dev/tap{w.macvtap_index}"), rdev)


def _open(node: Path | str, name: str = "mvt0", *, vnet_hdr: bool = True,
          queues: int = 1) -> dict[str, Any]:
    return {"op": "open_macvtap", "name": name, "node": str(node), "vnet_hdr": vnet_hdr,
            "queues": queues}


def _private_dirs() -> set[str]:
    return {str(p) for d in (Path(tempfile.gettempdir()), Path("/dev"))
            for p in d.glob(".tapvirt-mvt-*")}


def _private_node(path: Path, rdev: tuple[int, int], uid: int, mode: int = 0o600) -> Path:
    os.mknod(path, mode | stat.S_IFCHR, os.makedev(*rdev))
    os.chown(path, uid, -1)
    return path


def test_open_macvtap(as_user: AsUser, world: World, unpriv_user: User,
                      scratch: Path) -> None:
    node = Path(f"/dev/tap{world.macvtap_index}")
    assert node.stat().st_uid == unpriv_user.uid
    private = _private_node(scratch / "mvt0-node", macvtap_rdev(world.netns, "mvt0",
                                                                world.macvtap_index),
                            unpriv_user.uid)
    before = world.snapshots()
    results = run_as_user(as_user, [
        _open(node),
        _open(node, queues=3),
        _open(node, vnet_hdr=False),
        _open(private),
    ])
    for res in results:
        assert "error" not in res, res
        assert res["leaked"] == [] and all(res["cloexec"])
        assert {n for n, _ in res["iff"]} == {"mvt0"}
        assert all(size == 12 for size in res["hdrsz"])
    assert all(f & IFF_VNET_HDR and not f & IFF_MULTI_QUEUE for _, f in results[0]["iff"])
    assert len(results[1]["iff"]) == 3
    assert all(f & IFF_MULTI_QUEUE for _, f in results[1]["iff"])
    assert not results[2]["iff"][0][1] & IFF_VNET_HDR
    assert world.snapshots() == before


def test_macvtap_bad_nodes(as_user: AsUser, world: World, unpriv_user: User,
                           scratch: Path, netns: Netns) -> None:
    rdev = macvtap_rdev(netns, "mvt0", world.macvtap_index)
    root_owned = _private_node(scratch / "root-node", rdev, 0)
    # A second macvtap: its node is a real macvtap node, but not mvt0's.
    netns.ip("link", "add", "link", "ve0", "name", "mvt1", "type", "macvtap")
    mvt1 = netns.link_json("mvt1")
    assert mvt1 is not None
    other_rdev = macvtap_rdev(netns, "mvt1", int(str(mvt1["ifindex"])))
    other = _private_node(scratch / "other-node", other_rdev, unpriv_user.uid)
    tun_clone = _private_node(scratch / "tun-node", (10, 200), unpriv_user.uid)
    # A stale node: its macvtap is gone.
    netns.ip("link", "add", "link", "ve0", "name", "mvt2", "type", "macvtap")
    mvt2 = netns.link_json("mvt2")
    assert mvt2 is not None
    stale = _private_node(scratch / "stale-node",
                          macvtap_rdev(netns, "mvt2", int(str(mvt2["ifindex"]))),
                          unpriv_user.uid)
    netns.ip("link", "del", "mvt2")
    before = world.snapshots()
    cases = [
        (_open(root_owned), "macvtap-node-foreign", "chown"),
        (_open(other), "macvtap-node-foreign", "belongs to another device"),
        (_open(tun_clone), "macvtap-node-foreign", "c 10:200"),
        (_open(scratch / "missing"), "macvtap-node-missing", "does not exist"),
        (_open(stale), "macvtap-node-missing", "stale"),
        (_open(other, name="tapu"), "device-wrong-kind", "not a tap"),
        (_open(f"/dev/tap{world.macvtap_index}", queues=2), "", ""),
    ]
    results = run_as_user(as_user, [op for op, _, _ in cases])
    for (op, code, text), res in zip(cases, results, strict=True):
        assert res["leaked"] == [], (op, res)
        if not code:
            assert "error" not in res, res
            continue
        err = res["error"]
        assert err["code"] == code, (op, err)
        assert text in err["cause"] + err["fix"], (op, err)
    assert "mknod" in results[1]["error"]["fix"]
    assert world.snapshots() == before


def test_colliding_node_of_another_namespace(as_user: AsUser, netns: Netns,
                                             unpriv_user: User, scratch: Path) -> None:
    """Two namespaces, macvtaps with the same ifindex: /dev/tapN is the first one's."""
    index = random_ifindex()
    first = Netns.create()
    node = Path(f"/dev/tap{index}")
    rdevs: list[tuple[int, int]] = []
    try:
        for ns in (first, netns):
            ns.ip("link", "add", "vc0", "type", "veth", "peer", "name", "vc1")
            ns.ip("link", "add", "link", "vc0", "name", "mvt0", "index", str(index),
                  "type", "macvtap")
            rdevs.append(macvtap_rdev(ns, "mvt0", index))
        assert rdevs[0] != rdevs[1]
        st = node.stat()
        assert (os.major(st.st_rdev), os.minor(st.st_rdev)) == rdevs[0]
        os.chown(node, unpriv_user.uid, -1)  # even when the owner is right ...
        private = _private_node(scratch / "mine", rdevs[1], unpriv_user.uid)
        res = run_as_user(as_user, [_open(node), _open(private)])
        err = res[0]["error"]  # ... it is not our device
        assert err["code"] == "macvtap-node-foreign"
        assert f"c {rdevs[1][0]}:{rdevs[1][1]}" in err["cause"]
        assert f"mknod -m 0600 /dev/tap{index}.priv c {rdevs[1][0]} {rdevs[1][1]}" in err["fix"]
        assert res[0]["leaked"] == []
        assert "error" not in res[1] and res[1]["iff"][0][0] == "mvt0"
        # With privileges (a managed macvtap) the device is opened through a throwaway
        # private node instead: from the foreign node's path and from a missing one.
        leftovers = _private_dirs()
        root = run_as_root(netns, [_open(node, queues=2), _open(scratch / "missing")])
        for r in root:
            assert "error" not in r, r
            assert {n for n, _ in r["iff"]} == {"mvt0"} and r["leaked"] == []
        assert len(root[0]["iff"]) == 2
        assert _private_dirs() == leftovers
    finally:
        first.close()
        netns.close()
        if rdevs:
            remove_node_if(node, rdevs[0])
