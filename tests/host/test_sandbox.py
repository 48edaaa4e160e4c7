"""The test sandbox itself: the unprivileged side really runs as another uid with no
capabilities, inside the namespace, and can read tapvirt's code."""

from __future__ import annotations

from tests.support.sandbox import AsUser, Netns


def test_unprivileged_side_has_no_capabilities(as_user: AsUser, netns: Netns) -> None:
    proc = as_user.python(
        "import os, tapvirt\n"
        "caps = {l.split(':')[0]: l.split()[1] for l in open('/proc/self/status')"
        " if l.startswith('Cap')}\n"
        "print(os.getuid(), os.getgid(), caps['CapEff'], caps['CapPrm'], caps['CapBnd'])\n"
        "print(os.readlink('/proc/self/ns/net'))",
        check=True,
    )
    ids, nsline = proc.stdout.splitlines()
    uid, gid, eff, prm, bnd = ids.split()
    assert (int(uid), int(gid)) == (as_user.user.uid, as_user.user.gid)
    assert int(eff, 16) == 0 and int(prm, 16) == 0 and int(bnd, 16) == 0
    mine = netns.exec("readlink", "/proc/self/ns/net").stdout.strip()
    assert nsline == mine
