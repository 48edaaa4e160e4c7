"""A private macvtap node never opens a device other than the one it was made for
(issue 13, item 1): the kernel reuses a vanished macvtap's char device number for the
next macvtap, so an old node (or a hard link to it) would open someone else's."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.prep.attach import macvtap_open
from tests.prep.conftest import Prep
from tests.support.sandbox import AsUser, CodeCopy, Netns, User, wait_for

MAC_A, MAC_B = "52:54:00:00:0a:01", "52:54:00:00:0b:01"


@pytest.fixture
def lowers(netns: Netns) -> None:
    for a, b in (("ve0", "ve1"), ("ve2", "ve3")):
        netns.ip("link", "add", a, "type", "veth", "peer", "name", b)
        netns.ip("link", "set", a, "up")


@pytest.fixture
def victim(scratch: Path, netns: Netns, code_copy: CodeCopy) -> Iterator[AsUser]:
    user = User.create(scratch)
    try:
        yield AsUser(user, netns, code_copy)
    finally:
        user.close()


def _macvtap(prep: Prep, user: User, name: str, link: str, mac: str,
             *extra: str) -> dict[str, Any]:
    return dict(prep.ok("macvtap", name, "--user", user.name, "--link", link, "--mac", mac,
                        "--private-node", *extra)["device"])


def _rdev(path: str) -> tuple[int, int]:
    st = os.lstat(path)
    assert stat.S_ISCHR(st.st_mode)
    return os.major(st.st_rdev), os.minor(st.st_rdev)


def _opens(user: AsUser, path: str) -> list[str]:
    return user.python(macvtap_open(path), check=True).stdout.split()


def test_stale_node_and_its_hard_link_never_open_the_next_macvtap(
    prep: Prep, netns: Netns, lowers: None, as_user: AsUser, victim: AsUser
) -> None:
    mine = _macvtap(prep, as_user.user, "mvta", "ve0", MAC_A)["node"]
    old = _rdev(mine)
    assert _opens(as_user, mine)[0] == "mvta"
    # the owner keeps a hard link of its own (same filesystem, and it owns the inode)
    keep = as_user.user.home / "keep"
    as_user.run(["ln", mine, str(keep)], check=True)
    # the macvtap vanishes by other means: its lower link is deleted by an admin
    netns.ip("link", "del", "ve0")
    assert netns.link_json("mvta") is None
    theirs = _macvtap(prep, victim.user, "mvtb", "ve2", MAC_B)["node"]
    if _rdev(theirs) != old:
        pytest.skip(f"the kernel gave another number ({_rdev(theirs)} != {old}): "
                    "a macvtap was made elsewhere meanwhile")
    assert _opens(victim, theirs)[0] == "mvtb"
    # neither the old node nor its hard link opens mvtb for the old owner
    for path in (mine, str(keep)):
        out = _opens(as_user, path)
        assert out[0] == "ERR", f"{path} opened someone else's macvtap: {out}"
    # the old node is gone, and the hard link is root's 0600
    assert not os.path.lexists(mine)
    assert _opens(as_user, str(keep)) == ["ERR", "13"]
    st = os.lstat(keep)
    assert (st.st_uid, stat.S_IMODE(st.st_mode)) == (0, 0o600)


def test_delete_removes_the_node_named_in_the_mark_whatever_the_node_dir(
    prep: Prep, netns: Netns, lowers: None, unpriv_user: User, scratch: Path
) -> None:
    node = _macvtap(prep, unpriv_user, "mvta", "ve0", MAC_A)["node"]
    assert node.startswith(f"{prep.node_dir}/")
    prep.ok("delete", "mvta", "--node-dir", str(scratch / "elsewhere"))
    assert not os.path.lexists(node) and netns.link_json("mvta") is None


def test_gc_removes_nodes_whose_device_is_gone_and_keeps_live_ones(
    prep: Prep, netns: Netns, lowers: None, unpriv_user: User
) -> None:
    gone = _macvtap(prep, unpriv_user, "mvta", "ve0", MAC_A)["node"]
    live = _macvtap(prep, unpriv_user, "mvtb", "ve2", MAC_B)["node"]
    other_ns = Netns.create()
    try:
        other_ns.ip("link", "add", "ve0", "type", "veth", "peer", "name", "ve1")
        # the same device name in another namespace has its own node, and it stays
        prep.netns, saved = other_ns, prep.netns
        try:
            elsewhere = _macvtap(prep, unpriv_user, "mvtb", "ve0", MAC_B)["node"]
        finally:
            prep.netns = saved
        netns.ip("link", "del", "ve0")  # mvta vanishes; its node stays until gc
        assert os.path.lexists(gone)
        run = prep.run("gc", netns=False)
        assert run.rc == 0, run.stdout
        removed = [r["node"] for r in run.out["removed"]]
        assert gone in removed and live not in removed and elsewhere not in removed
        assert not os.path.lexists(gone)
        assert os.path.lexists(live) and os.path.lexists(elsewhere)
        # a whole namespace deleted: its nodes go at the next gc
        rdev = _rdev(elsewhere)
        other_ns.close()  # the kernel removes its devices a moment later
        assert wait_for(lambda: not os.path.lexists(f"/sys/dev/char/{rdev[0]}:{rdev[1]}"))
        run = prep.run("gc", netns=False)
        assert [r["node"] for r in run.out["removed"]] == [elsewhere]
        assert os.path.lexists(live)
        assert any(e["event"] == "gc-removed" and e["node"] == gone for e in prep.events())
        # gc works on every namespace: --netns makes no sense
        assert prep.run("gc").code == "usage"
    finally:
        other_ns.close()


def test_gc_keeps_a_live_node_it_cannot_attribute(
    prep: Prep, netns: Netns, lowers: None, unpriv_user: User
) -> None:
    # a node named for a namespace tapvirt-prep cannot enter (like tapvirt-cni's pod
    # nodes, `cni.<ifname>`) whose device number is in use is left alone; once the
    # number is free it goes
    node = _macvtap(prep, unpriv_user, "mvta", "ve0", MAC_A)["node"]
    rdev = _rdev(node)
    foreign = prep.node_dir / "cni.eth1"
    os.mknod(foreign, stat.S_IFCHR | 0o600, os.makedev(*rdev))
    run = prep.run("gc", netns=False)
    assert run.out["removed"] == [] and foreign.exists()
    netns.ip("link", "del", "ve0")
    assert wait_for(lambda: not os.path.lexists(f"/sys/dev/char/{rdev[0]}:{rdev[1]}"))
    run = prep.run("gc", netns=False)
    assert sorted(r["node"] for r in run.out["removed"]) == sorted([node, str(foreign)])
