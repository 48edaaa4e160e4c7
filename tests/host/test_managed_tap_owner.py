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
    netlink for new links): each creation either holds our two queues only, or fails
    with device-raced and the tap is gone, never a guest sharing a queue with them."""
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
            if "error" in res[0]:
                assert res[0]["error"]["code"] == "device-raced", res[0]
                assert res[1]["info"] is None, "a raced tap must be deleted"
                outcomes.append("raced")
            else:
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
