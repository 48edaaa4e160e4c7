"""A managed multi-queue tap (created by tapvirt with CAP_NET_ADMIN) is attachable by
its creator only, for the whole life of the guest (issue 13, item 2, launcher side): it
is owned (TUNSETOWNER, the launcher's euid) right after TUNSETIFF, and a queue someone
attached in that instant makes the creation fail (`device-raced`), the tap deleted."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

from tests.host.hostside import driver_code, run_as_root, snapshot, stop
from tests.prep.attach import spin_attach, tap_attach, watch_attach
from tests.support.sandbox import SRC, AsUser, Netns, unprivileged_python

ROUNDS = 8

# Root in the namespace: prints, for every RTM_NEWLINK of NAME, its tun owner (or -1)
# and queue count, as a netlink listener racing the creation would first see the tap.
FIRST_SIGHT = r"""
import select, socket, struct, sys
from tapvirt.host import netlink as n
nl = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE)
nl.bind((0, 1))  # RTMGRP_LINK
print("ready", flush=True)
while True:
    r = select.select([nl, sys.stdin], [], [])[0]
    if sys.stdin in r:
        break
    data = nl.recv(65536)
    off = 0
    while off + 16 <= len(data):
        ln, typ = struct.unpack_from("IH", data, off)
        if typ == n.RTM_NEWLINK:
            raw = n.parse_link(data[off + 16:off + ln])
            if raw.name == {name!r}:
                print(raw.tun.get(n.IFLA_TUN_OWNER, -1), raw.tun.get(n.IFLA_TUN_NUM_QUEUES),
                      flush=True)
        off += (ln + 3) & ~3
"""


def _root_holder(netns: Netns, tun_node: Path, name: str) -> subprocess.Popen[str]:
    """Root creates managed multi-queue tap NAME and keeps its fds (as a guest would)."""
    ops: list[dict[str, Any]] = [{"op": "create_tap", "name": name, "tun_node": str(tun_node),
            "mac": "fe:54:00:12:34:56", "mtu": None, "bridge": None, "vnet_hdr": True,
            "queues": 2, "hold": True},
           {"op": "lookup", "name": name}, {"op": "pause"}]
    proc = subprocess.Popen(["ip", "netns", "exec", netns.name, "env", f"PYTHONPATH={SRC}",
                             unprivileged_python(), "-c", driver_code(ops)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    results = json.loads(proc.stdout.readline())
    assert all("error" not in r for r in results), results
    return proc


def test_another_uid_cannot_attach_a_queue_to_a_running_managed_tap(
    netns: Netns, tun_node: Path, as_user: AsUser
) -> None:
    holder = _root_holder(netns, tun_node, "mq0")
    try:
        # the intruder has its own tun clone node in the namespace and asks for 2 queues
        out = as_user.python(tap_attach("mq0", str(tun_node), queues=2),
                             check=True).stdout.split()
        assert out == ["ERR", "1"], f"another uid attached to the managed tap: {out}"
        info = json.loads(netns.ip("-d", "-j", "link", "show", "dev", "mq0").stdout)[0]
        data = info["linkinfo"]["info_data"]
        assert int(data.get("numqueues", 0)) == 2  # ours only
        assert data["multi_queue"] is True and data.get("user") in (0, "root")
    finally:
        stop(holder)
    assert snapshot(netns, "mq0") is None  # gone with the launcher's fds


def test_a_queue_won_while_the_managed_tap_is_created_makes_it_fail_and_go(
    netns: Netns, tun_node: Path, as_user: AsUser
) -> None:
    """Intruders race the creation (spinning on TUNSETIFF for the name, and watching
    netlink for new links): every creation holds our two queues only (a launcher that
    can make a namespace, as root here, creates the tap in a private one; one with only
    CAP_NET_ADMIN fails with device-raced and deletes the tap instead)."""
    procs = [subprocess.Popen(as_user.argv([unprivileged_python(), "-c", code]),
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
             for code in (spin_attach("race0", str(tun_node)), watch_attach(str(tun_node)))]
    try:
        for proc in procs:
            assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        outcomes = []
        for _ in range(ROUNDS):
            res = run_as_root(netns, [
                {"op": "create_tap", "name": "race0", "tun_node": str(tun_node),
                 "mac": "fe:54:00:12:34:56", "mtu": None, "bridge": None,
                 "vnet_hdr": True, "queues": 2, "hold": True},
                {"op": "lookup", "name": "race0"}])
            # born in a private namespace: the intruders never get a chance
            assert "error" not in res[0], res[0]
            tun = res[1]["info"]["tun"]
            assert tun["num_queues"] + tun["num_disabled_queues"] == 2, tun
            outcomes.append("ok")
            # our fds are closed: nothing may keep race0 alive
            assert snapshot(netns, "race0") is None, "an intruder kept a queue"
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()
    assert outcomes


def test_a_managed_tap_is_first_seen_owned_and_with_all_its_queues(
    netns: Netns, tun_node: Path
) -> None:
    """The root of the race (issue 13, item 2): nobody in the namespace may see the new
    tap before it has its owner. It is born in a private namespace, owned and given its
    queues there, then moved in: the first RTM_NEWLINK here already carries owner 0
    and both queues. (Created in place, the first notification is the bare tap.)"""
    watcher = subprocess.Popen(
        ["ip", "netns", "exec", netns.name, "env", f"PYTHONPATH={SRC}",
         unprivileged_python(), "-c", FIRST_SIGHT.format(name="born0")],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert watcher.stdout is not None and watcher.stdout.readline().strip() == "ready"
        res = run_as_root(netns, [
            {"op": "create_tap", "name": "born0", "tun_node": str(tun_node),
             "mac": "fe:54:00:12:34:57", "mtu": None, "bridge": None, "vnet_hdr": True,
             "queues": 2, "hold": True},
            {"op": "lookup", "name": "born0"}])
        assert "error" not in res[0], res[0]
        assert res[1]["info"]["tun"]["owner"] == 0
        first = watcher.stdout.readline().split()
        assert first == ["0", "2"], f"the tap was visible unowned or half-queued: {first}"
    finally:
        watcher.kill()
        watcher.wait()
    assert snapshot(netns, "born0") is None  # gone with the launcher's fds
