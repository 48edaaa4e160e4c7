"""`tapvirt-prep macvtap`: real macvtaps in test namespaces, their char device given to
the user (/dev/tapN when it is really this device's, else a private node), and the
unprivileged side opening it."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import Any

import pytest

from tests.prep.attach import macvtap_open
from tests.prep.conftest import Prep, link_names
from tests.support.sandbox import AsUser, Netns, User

MAC = "52:54:00:12:34:56"


@pytest.fixture
def lower(netns: Netns) -> str:
    netns.ip("link", "add", "ve0", "type", "veth", "peer", "name", "ve1")
    netns.ip("link", "set", "ve0", "up")
    return "ve0"


def _sysfs_dev(netns: Netns, name: str) -> tuple[int, int]:
    ifindex = netns.exec("cat", f"/sys/class/net/{name}/ifindex").stdout.strip()
    major, minor = netns.exec(
        "cat", f"/sys/class/net/{name}/macvtap/tap{ifindex}/dev").stdout.strip().split(":")
    return int(major), int(minor)


def _node(path: str) -> os.stat_result:
    st = os.lstat(path)
    assert stat.S_ISCHR(st.st_mode)
    return st


def _macvtap(prep: Prep, user: User, *extra: str, name: str = "mvt0",
             mac: str = MAC) -> dict[str, Any]:
    return prep.ok("macvtap", name, "--user", user.name, "--link", "ve0", "--mac", mac,
                   *extra)


def test_macvtap_is_created_and_its_node_given_to_the_user(
    prep: Prep, netns: Netns, lower: str, as_user: AsUser
) -> None:
    res = _macvtap(prep, as_user.user, "--mode", "vepa", "--queues", "2")
    dev = res["device"]
    info: Any = netns.link_json("mvt0")
    assert info is not None and info["address"] == MAC and "UP" in info["flags"]
    assert info["linkinfo"]["info_data"]["mode"] == "vepa" and info["link"] == lower
    node = dev["node"]
    st = _node(node)
    # whichever node was chosen, it is this device's and the user's alone
    assert (os.major(st.st_rdev), os.minor(st.st_rdev)) == _sysfs_dev(netns, "mvt0")
    assert (st.st_uid, stat.S_IMODE(st.st_mode)) == (as_user.user.uid, 0o600)
    if node.startswith("/dev/tap"):
        assert node == f"/dev/tap{dev['ifindex']}"
    else:
        assert node == f"{prep.node_dir}/{netns.name}.mvt0"
    out = as_user.python(macvtap_open(node, queues=2), check=True).stdout.split()
    assert out == ["mvt0", "0x5002", "2"]


def test_colliding_dev_tap_name_gets_a_private_node(
    prep: Prep, netns: Netns, lower: str, as_user: AsUser
) -> None:
    # Another namespace holds a macvtap with the ifindex ours will get, so /dev/tapN
    # (one devtmpfs for all namespaces) is not ours: it must be left alone.
    other = Netns.create()
    try:
        other.ip("link", "add", "ove0", "type", "veth", "peer", "name", "ove1")
        nxt = max(int(x["ifindex"]) for x in
                  json.loads(netns.ip("-j", "link", "show").stdout)) + 1
        other.ip("link", "add", "link", "ove0", "name", "omvt", "index", str(nxt),
                 "type", "macvtap")
        dev_path = f"/dev/tap{nxt}"
        before = os.lstat(dev_path) if os.path.exists(dev_path) else None
        res = _macvtap(prep, as_user.user)
        assert res["device"]["ifindex"] == nxt
        node = res["device"]["node"]
        assert node == f"{prep.node_dir}/{netns.name}.mvt0"
        if before is not None:  # the other device's node was not chowned
            after = os.lstat(dev_path)
            assert (after.st_uid, after.st_rdev) == (before.st_uid, before.st_rdev)
        out = as_user.python(macvtap_open(node), check=True).stdout.split()
        assert out[0] == "mvt0"
    finally:
        other.close()


def test_private_node_on_request_rerun_mismatch_and_delete(
    prep: Prep, netns: Netns, lower: str, as_user: AsUser
) -> None:
    first = _macvtap(prep, as_user.user, "--private-node")
    node = first["device"]["node"]
    assert node == f"{prep.node_dir}/{netns.name}.mvt0"
    again = _macvtap(prep, as_user.user, "--private-node")
    assert again["action"] == "exists" and again["device"] == first["device"]
    bad = prep.fails("device-mismatch", "macvtap", "mvt0", "--user", as_user.user.name,
                     "--link", "ve0", "--mac", "52:54:00:00:00:99", "--mode", "private", rc=4)
    assert set(bad.out["error"]["details"]["fields"]) == {"mac", "mode"}
    # a node whose owner was changed behind our back is a mismatch too
    os.chown(node, 0, 0)
    bad = prep.fails("device-mismatch", "macvtap", "mvt0", "--user", as_user.user.name,
                     "--link", "ve0", "--mac", MAC, rc=4)
    assert set(bad.out["error"]["details"]["fields"]) == {"node"}
    assert prep.ok("delete", "mvt0")["action"] == "deleted"
    assert not os.path.lexists(node) and "mvt0" not in link_names(netns)


def test_something_in_the_way_of_the_private_node_rolls_back(
    prep: Prep, netns: Netns, lower: str, unpriv_user: User
) -> None:
    prep.node_dir.mkdir(mode=0o755)
    planted = prep.node_dir / f"{netns.name}.mvt0"
    planted.symlink_to("/etc/passwd")
    bad = prep.run("macvtap", "mvt0", "--user", unpriv_user.name, "--link", "ve0",
                   "--mac", MAC, "--private-node")
    assert bad.code == "node-unsafe"
    assert "mvt0" not in link_names(netns)  # rolled back
    assert planted.is_symlink() and os.stat("/etc/passwd").st_uid == 0


@pytest.mark.parametrize("kind", ["symlink", "writable"])
def test_unsafe_node_directory_is_refused(
    prep: Prep, netns: Netns, lower: str, unpriv_user: User, scratch: Path, *, kind: str
) -> None:
    real = scratch / "real"
    real.mkdir()
    if kind == "symlink":
        prep.node_dir.symlink_to(real)
    else:
        prep.node_dir.mkdir()
        prep.node_dir.chmod(0o777)
    bad = prep.run("macvtap", "mvt0", "--user", unpriv_user.name, "--link", "ve0",
                   "--mac", MAC, "--private-node")
    assert bad.code == "node-dir-unusable", bad.stdout
    assert "mvt0" not in link_names(netns) and not list(real.iterdir())


def test_missing_link_and_foreign_macvtap(prep: Prep, netns: Netns, lower: str) -> None:
    prep.fails("source-dev-missing", "macvtap", "mvt0", "--user", "0", "--link", "nope",
               "--mac", MAC)
    netns.ip("link", "add", "link", "ve0", "name", "admvt", "type", "macvtap")
    prep.fails("device-foreign", "macvtap", "admvt", "--user", "0", "--link", "ve0",
               "--mac", MAC, rc=4)
    prep.fails("device-foreign", "delete", "admvt", rc=4)
    assert "admvt" in link_names(netns)
