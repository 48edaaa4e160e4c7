"""QMP fd passing with a real tap: an unprivileged user attaches a precreated tap and
hands the fd to a running QEMU through getfd + netdev_add (what hotplug needs)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tests.support.sandbox import AsUser, Netns, User, unique

pytestmark = pytest.mark.skipif(shutil.which("qemu-system-x86_64") is None,
                                reason="qemu-system-x86_64 is not installed")

USER_CODE = r"""
import fcntl, json, os, struct, sys
from tapvirt.qemu import process
from tapvirt.qemu.qmp import QmpClient
tun, tap, work = sys.argv[1:4]
fd = os.open(tun, os.O_RDWR | os.O_CLOEXEC)
fcntl.ioctl(fd, 0x400454CA, struct.pack("16sH22x", tap.encode(), 0x0002 | 0x1000 | 0x4000))
qmp, log = work + "/qmp.sock", work + "/qemu.log"
proc = process.spawn(["qemu-system-x86_64", "-accel", "tcg", "-m", "64", "-nodefaults",
                      "-display", "none", "-S", "-qmp", f"unix:{qmp},server=on,wait=off"],
                     pass_fds=(), log_path=log)
out = {}
try:
    with process.wait_for_qmp(proc, qmp, log_path=log, timeout=20) as c:
        c.send_fd("tapfd0", fd)
        os.close(fd)  # QEMU holds its own copy now
        c.execute("netdev_add", {"type": "tap", "id": "hostnet0", "fd": "tapfd0"})
        c.execute("device_add", {"driver": "virtio-net-pci", "netdev": "hostnet0",
                                 "id": "net0", "mac": "52:54:00:aa:bb:01"})
        info = c.execute("human-monitor-command", {"command-line": "info network"})
        out["info"] = info
        holders = []
        for f in os.listdir(f"/proc/{proc.pid}/fdinfo"):
            with open(f"/proc/{proc.pid}/fdinfo/{f}") as h:
                if f"iff:\t{tap}" in h.read():
                    holders.append(f)
        out["holders"] = holders
finally:
    out["exit"] = process.stop(proc)
print(json.dumps(out))
"""


def test_getfd_netdev_add_real_tap(as_user: AsUser, netns: Netns, unpriv_user: User,
                                   tun_node: Path, scratch: Path) -> None:
    tap = unique("tvq")
    netns.exec("ip", "tuntap", "add", "mode", "tap", "user", unpriv_user.name,
               "vnet_hdr", "name", tap)
    before = netns.link_json(tap)
    work = scratch / "work"
    work.mkdir()
    shutil.chown(work, unpriv_user.uid, unpriv_user.gid)
    proc = as_user.python(USER_CODE.replace("sys.argv[1:4]", repr([str(tun_node), tap,
                                                                    str(work)])), check=True)
    out = json.loads(proc.stdout.splitlines()[-1])
    assert f"ifname={tap}" in out["info"] or "fd=" in out["info"]
    assert "net0" in out["info"] and "52:54:00:aa:bb:01" in out["info"]
    assert len(out["holders"]) == 1  # QEMU holds exactly one fd on the tap
    assert out["exit"] == 0
    after = netns.link_json(tap)
    assert after is not None and before is not None
    for key in ("address", "mtu", "flags", "linkinfo"):
        assert after.get(key) == before.get(key)
