"""Managed devices: non-persistent taps and macvtaps created with CAP_NET_ADMIN (root in a
test namespace), and refused clearly without it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.host.hostside import run_as_root, run_as_user, snapshot
from tests.support.sandbox import AsUser, Netns


def _create(name: str | None, node: Path, *, mac: str = "fe:54:00:12:34:56",
            mtu: int | None = None, bridge: str | None = None, queues: int = 1,
            hold: bool = True) -> dict[str, Any]:
    return {"op": "create_tap", "name": name, "tun_node": str(node), "mac": mac, "mtu": mtu,
            "bridge": bridge, "vnet_hdr": True, "queues": queues, "hold": hold}


def _no_errors(results: list[dict[str, Any]]) -> None:
    for res in results:
        assert "error" not in res, res
        assert res["leaked"] == [], res


def test_managed_tap_on_bridge_vanishes_with_its_fds(netns: Netns, tun_node: Path) -> None:
    netns.ip("link", "add", "br0", "type", "bridge")
    netns.ip("link", "set", "br0", "mtu", "1400")
    netns.ip("link", "set", "br0", "up")
    results = run_as_root(netns, [
        {"op": "identity"},
        _create(None, tun_node, bridge="br0", queues=2),
        _create(None, tun_node),
        _create("mytap", tun_node, mac="fa:54:00:00:00:01", mtu=9000),
        {"op": "lookup", "name": "vnet0"},
        {"op": "lookup", "name": "vnet1"},
        {"op": "lookup", "name": "mytap"},
        {"op": "close_held"},
        {"op": "lookup", "name": "vnet0"},
        {"op": "lookup", "name": "vnet1"},
        {"op": "lookup", "name": "mytap"},
    ])
    _no_errors(results)
    assert results[0]["net_admin"] is True
    assert [r["name"] for r in results[1:4]] == ["vnet0", "vnet1", "mytap"]
    assert len(results[1]["iff"]) == 2 and all(n == "vnet0" for n, _ in results[1]["iff"])
    vnet0, vnet1, mytap = (r["info"] for r in results[4:7])
    assert vnet0["master"] == "br0" and vnet0["mtu"] == 1400  # the bridge's MTU
    assert vnet0["mac"] == "fe:54:00:12:34:56" and vnet0["flags"] & 1
    assert vnet0["tun"]["persist"] is False and vnet0["tun"]["multi_queue"] is True
    assert vnet0["tun"]["owner"] == 0  # the creator (root here): nobody else may attach
    assert vnet1["master"] is None and vnet1["mtu"] == 1500 and vnet1["flags"] & 1
    assert mytap["mtu"] == 9000 and mytap["mac"] == "fa:54:00:00:00:01"
    assert all(r["info"] is None for r in results[8:])
    assert snapshot(netns, "vnet0") is None and snapshot(netns, "mytap") is None


def test_managed_tap_refusals(netns: Netns, tun_node: Path) -> None:
    netns.ip("tuntap", "add", "dev", "tapx", "mode", "tap", "user", "0")
    netns.ip("link", "add", "ve0", "type", "veth", "peer", "name", "ve1")
    before = {d: snapshot(netns, d) for d in ("tapx", "ve0", "ve1")}
    cases = [
        (_create("tapx", tun_node), "device-exists", "managed='no'"),
        (_create("ve0", tun_node), "device-exists", "already exists"),
        (_create(None, tun_node, bridge="nobr"), "bridge-missing", "ip link add nobr"),
        (_create(None, tun_node, bridge="ve0"), "device-wrong-kind", "not a bridge"),
        (_create(None, tun_node, mtu=70000), "mtu-too-large", "65521"),
        # The kernel refuses MTU 60 after the tap exists: closing its fds removes it.
        (_create(None, tun_node, mtu=60), "host-error", "MTU 60"),
        ({"op": "open_tap", "name": "nosuch", "tun_node": str(tun_node), "vnet_hdr": True,
          "queues": 1}, "device-missing", "ip tuntap add dev nosuch"),
        ({"op": "open_tap", "name": "ve0", "tun_node": str(tun_node), "vnet_hdr": True,
          "queues": 1}, "device-wrong-kind", "a veth"),
        (_create("x" * 20, tun_node), "invalid-name", "at most 15"),
    ]
    results = run_as_root(netns, [op for op, _, _ in cases])
    for (op, code, text), res in zip(cases, results, strict=True):
        assert res["leaked"] == [], res
        assert res["error"]["code"] == code, (op, res)
        assert text in res["error"]["cause"] + res["error"]["fix"], res
    assert {d: snapshot(netns, d) for d in ("tapx", "ve0", "ve1")} == before
    # Nothing was created: not by the failed MTU, not by root's TUNSETIFF on "nosuch".
    assert snapshot(netns, "vnet0") is None and snapshot(netns, "nosuch") is None
    attached = run_as_root(netns, [{"op": "open_tap", "name": "tapx", "tun_node": str(tun_node),
                                    "vnet_hdr": True, "queues": 1}])[0]
    assert "error" not in attached and attached["iff"][0][0] == "tapx"  # root: any owner


def test_managed_macvtap_create_and_delete(netns: Netns) -> None:
    netns.ip("link", "add", "ve0", "type", "veth", "peer", "name", "ve1")
    netns.ip("link", "add", "link", "ve0", "name", "macvtap0", "type", "macvtap")
    results = run_as_root(netns, [
        {"op": "create_macvtap", "name": None, "link": "ve0", "mode": "bridge",
         "mac": "52:54:00:ab:cd:01", "up": True},
        {"op": "create_macvtap", "name": "mymv", "link": "ve0", "mode": "vepa",
         "mac": "52:54:00:ab:cd:02", "up": False},
        {"op": "delete_link", "name": "macvtap1"},
        {"op": "lookup", "name": "macvtap1"},
    ])
    _no_errors(results)
    first, second = results[0]["info"], results[1]["info"]
    assert first["name"] == "macvtap1"  # macvtap0 was taken
    assert first["kind"] == "macvtap" and first["link"] == "ve0"
    assert first["macvtap_mode"] == "bridge" and first["mac"] == "52:54:00:ab:cd:01"
    assert first["flags"] & 1 and first["macvtap_dev"] is not None
    assert second["name"] == "mymv" and second["macvtap_mode"] == "vepa"
    assert not second["flags"] & 1
    mymv = netns.link_json("mymv")
    assert mymv is not None and mymv["address"] == "52:54:00:ab:cd:02"
    assert results[3]["info"] is None and netns.link_json("macvtap1") is None
    errors = run_as_root(netns, [
        {"op": "create_macvtap", "name": "mymv", "link": "ve0", "mode": "bridge",
         "mac": "52:54:00:ab:cd:03", "up": True},
        {"op": "create_macvtap", "name": None, "link": "nolower", "mode": "bridge",
         "mac": "52:54:00:ab:cd:03", "up": True},
        {"op": "delete_link", "name": "macvtap1"},
        {"op": "set_link_up", "name": "mymv"},
    ])
    assert [e.get("error", {}).get("code") for e in errors] == [
        "device-exists", "source-dev-missing", "device-missing", None]
    mymv_after = netns.link_json("mymv")
    assert mymv_after is not None and "UP" in mymv_after["flags"]  # type: ignore[operator]


def test_managed_paths_need_privilege(as_user: AsUser, netns: Netns, tun_node: Path) -> None:
    netns.ip("link", "add", "ve0", "type", "veth", "peer", "name", "ve1")
    before = snapshot(netns, "ve0")
    results = run_as_user(as_user, [
        _create(None, tun_node),
        _create("mine", tun_node, bridge="ve0"),
        {"op": "create_macvtap", "name": None, "link": "ve0", "mode": "bridge",
         "mac": "52:54:00:ab:cd:01", "up": True},
        {"op": "delete_link", "name": "ve0"},
        {"op": "set_link_up", "name": "ve0"},
    ])
    for res in results:
        assert res["error"]["code"] == "managed-needs-privilege", res
        assert "CAP_NET_ADMIN" in res["error"]["cause"]
        assert "managed='no'" in res["error"]["fix"]
        assert res["leaked"] == []
    assert snapshot(netns, "ve0") == before
    assert snapshot(netns, "vnet0") is None and snapshot(netns, "macvtap0") is None
