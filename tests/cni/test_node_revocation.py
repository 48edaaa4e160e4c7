"""A pod owner's hard link of its macvtap node is worthless after DEL and GC (issue 13,
item 1, tapvirt-cni side): the kernel gives a freed macvtap char device number to the
next macvtap, so the node's inode is made root:root 0600 before it is unlinked."""

from __future__ import annotations

import os
import stat

from tests.cni.conftest import Cni
from tests.prep.attach import macvtap_open
from tests.support.sandbox import AsUser

MAC_A, MAC_B = "52:54:00:c1:0a:01", "52:54:00:c1:0b:01"


def _lowers(cni: Cni) -> None:
    for a in ("ve0", "ve2"):
        cni.netns.ip("link", "add", a, "type", "veth", "peer", "name", f"{a}p")
        cni.netns.ip("link", "set", a, "up")


def _opens(user: AsUser, path: str) -> list[str]:
    return user.python(macvtap_open(path), check=True).stdout.split()


def _add_macvtap(cni: Cni, user: AsUser, *, cid: str) -> str:
    """Macvtap mv0 on ve0 for the pod `cid`, owned by `user`; returns its node."""
    conf = cni.conf(macvtap={"link": "ve0"}, mac=MAC_A, owner=user.user.uid,
                    group=user.user.gid)
    node = cni.ok("ADD", conf, ifname="mv0", cid=cid).out["interfaces"][-1]["tapvirtNode"]
    assert isinstance(node, str)
    return node


def _assert_revoked(user: AsUser, node: str, keep: str) -> None:
    assert not os.path.lexists(node)
    st = os.lstat(keep)
    assert stat.S_ISCHR(st.st_mode)
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (0, 0, 0o600)
    assert _opens(user, keep) == ["ERR", "13"]


def test_a_hard_link_of_the_pods_node_opens_nothing_after_del(
    cni: Cni, as_user: AsUser
) -> None:
    _lowers(cni)
    node = _add_macvtap(cni, as_user, cid="pod1")
    assert _opens(as_user, node)[0] == "mv0"
    # the pod's owner keeps a hard link (it owns the inode; same filesystem)
    keep = str(as_user.user.home / "keep")
    as_user.run(["ln", node, keep], check=True)
    assert _opens(as_user, keep)[0] == "mv0"
    cni.ok("DEL", cni.conf(macvtap={"link": "ve0"}), ifname="mv0", cid="pod1")
    _assert_revoked(as_user, node, keep)
    # the next macvtap (often given the same number) is not reachable through it either
    cni.ok("ADD", cni.conf(macvtap={"link": "ve2"}, mac=MAC_B), ifname="mv1", cid="pod2")
    assert _opens(as_user, keep)[0] == "ERR"


def test_a_hard_link_of_the_pods_node_opens_nothing_after_gc(
    cni: Cni, as_user: AsUser
) -> None:
    _lowers(cni)
    node = _add_macvtap(cni, as_user, cid="stale")
    keep = str(as_user.user.home / "keep")
    as_user.run(["ln", node, keep], check=True)
    gc = cni.conf()
    gc["cni.dev/valid-attachments"] = []
    cni.ok("GC", gc, drop=("CNI_CONTAINERID", "CNI_IFNAME", "CNI_NETNS"))
    _assert_revoked(as_user, node, keep)
