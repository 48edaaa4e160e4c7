"""End to end: real guests (TCG) started by an unprivileged user with tapvirt on devices
root precreated in a namespace (issue #4, scenarios 1-7).

One lab (namespace, bridge, user, tun node) serves the module; the four boot scenarios
run their guests at the same time to keep the stage short on two cores.
"""

from __future__ import annotations

import os
import shutil
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.lab import BRIDGE_IP, Lab, module_lab, wait_until, zombie
from tests.support.sandbox import unique

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(shutil.which("qemu-system-x86_64") is None,
                       reason="qemu-system-x86_64 is not installed"),
]

MARKER = r"TV-MARKER up=\S+ ip=(\S+) mac=(\S+)"


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    yield from module_lab()


def _iface(kind: str, mac: str, dev: str | None = None, queues: int | None = None) -> str:
    driver = f"\n      <driver queues='{queues}'/>" if queues else ""
    target = f"\n      <target dev='{dev}' managed='no'/>" if dev else ""
    return (f"    <interface type='{kind}'>\n      <mac address='{mac}'/>{target}\n"
            f"      <model type='virtio'/>{driver}\n    </interface>")


@pytest.fixture(scope="module")
def booted(lab: Lab) -> dict[str, dict[str, Any]]:
    """Scenarios 1-4 booted together: tap, multiqueue tap, macvtap on a veth, user."""
    guests: dict[str, dict[str, Any]] = {}
    plan = [
        ("tv-tap", "52:54:00:e2:00:01", lab.tap(), None),
        ("tv-mq", "52:54:00:e2:00:02", lab.tap(multi_queue=True), 2),
    ]
    mac = "52:54:00:e2:00:03"
    plan.append(("tv-mvt", mac, lab.macvtap(mac), None))
    for name, mac, dev, queues in plan:
        ip = lab.next_ip()
        cmd = lab.image.cmdline(ip=f"{ip}/24", peer=BRIDGE_IP)
        lab.define(name, lab.domain_xml(name, _iface("ethernet", mac, dev, queues), cmd))
        guests[name] = {"ip": ip, "mac": mac, "dev": dev, "before": lab.snapshot(dev)}
    cmd = lab.image.cmdline(ip="10.0.2.15/24", peer="10.0.2.2")
    lab.define("tv-user", lab.domain_xml("tv-user", _iface("user", "52:54:00:e2:00:04"), cmd))
    guests["tv-user"] = {"ip": "10.0.2.15", "mac": "52:54:00:e2:00:04"}
    # <link state='down'/>: set_link before cont; the guest sees no carrier
    down = _iface("user", "52:54:00:e2:00:05").replace(
        "<model type='virtio'/>", "<model type='virtio'/>\n      <link state='down'/>")
    lab.define("tv-down", lab.domain_xml("tv-down", down, cmd))
    guests["tv-down"] = {"ip": "10.0.2.15", "mac": "52:54:00:e2:00:05", "link": "down"}
    for name in guests:
        lab.tv("start", name)
    return guests


def test_guests_boot_and_ping_both_ways(lab: Lab, booted: dict[str, dict[str, Any]]) -> None:
    for name, g in booted.items():
        m = lab.wait_console(name, MARKER)
        assert m.group(1) == f"{g['ip']}/24" and m.group(2) == g["mac"], name
    for name, g in booted.items():
        lab.wait_console(name, r"TV-PING-(OK|FAIL)")
        if g.get("link") == "down":
            assert "TV-PING-FAIL" in lab.console(name), f"{name}: link down, yet it pinged"
            continue
        assert "TV-PING-OK" in lab.console(name), f"{name} could not ping its peer"
        if name != "tv-user":
            assert lab.host_ping(g["ip"]), f"host cannot ping {name} at {g['ip']}"
    states = {r["name"]: r["state"] for r in lab.tv_json("list")["domains"]}
    assert states == dict.fromkeys(booted, "running")


def test_domiflist_and_live_xml(lab: Lab, booted: dict[str, dict[str, Any]]) -> None:
    rows = lab.tv_json("domiflist", "tv-mq")["interfaces"]
    assert rows == [{"interface": "net0", "type": "ethernet", "device": booted["tv-mq"]["dev"],
                     "model": "virtio", "mac": "52:54:00:e2:00:02"}]
    xml = lab.tv("dumpxml", "tv-tap").stdout
    assert "<alias name='net0'/>" in xml and f"dev='{booted['tv-tap']['dev']}'" in xml
    info = lab.tv_json("dominfo", "tv-tap")
    assert info["state"] == "running" and info["qemu_pid"]
    # a supervisor only where one is asked for (nothing here needs one)
    assert info["supervised"] is lab.supervised
    assert bool(info["supervisor_pid"]) is lab.supervised
    # QEMU runs as the user and holds exactly the tap fds it needs (2 for queues=2)
    qemu = info["qemu_pid"]
    assert os.stat(f"/proc/{qemu}").st_uid == lab.user.uid
    mq_pid = lab.tv_json("dominfo", "tv-mq")["qemu_pid"]
    fdinfo = Path(f"/proc/{mq_pid}/fdinfo")
    held = [f for f in fdinfo.iterdir() if f"iff:\t{booted['tv-mq']['dev']}" in f.read_text()]
    assert len(held) == 2


def test_destroy_leaves_devices_unchanged_and_restart_works(
    lab: Lab, booted: dict[str, dict[str, Any]],
) -> None:
    lab.wait_console("tv-tap", MARKER)
    for name in booted:
        lab.tv("destroy", name)
        assert lab.tv_json("domstate", name)["state"] == "shut off"
    for name, g in booted.items():
        if "dev" in g:
            assert lab.snapshot(g["dev"]) == g["before"], f"{name}: device changed"
    assert lab.tv_json("list")["domains"] == []
    # the same devices serve a second start
    for name in ("tv-tap", "tv-mq"):
        lab.tv("start", name)
    for name in ("tv-tap", "tv-mq"):
        lab.wait_console(name, MARKER)
        assert lab.host_ping(booted[name]["ip"])
    for name in ("tv-tap", "tv-mq"):
        lab.tv("destroy", name)


def test_sigkill_to_qemu(lab: Lab, booted: dict[str, dict[str, Any]]) -> None:
    name, g = "tv-tap", booted["tv-tap"]
    if lab.tv_json("domstate", name)["state"] != "running":
        lab.tv("start", name)
    qemu = lab.tv_json("dominfo", name)["qemu_pid"]
    os.kill(qemu, signal.SIGKILL)
    if lab.supervised:  # its supervisor records the end at once, with the exit status
        assert wait_until(lambda: lab.state(name)["state"] == "shut off", 3)
        st = lab.state(name)
        assert st["reason"] == "crashed" and st["exit_status"] == -signal.SIGKILL
        assert not zombie(qemu) and not os.path.exists(f"/proc/{qemu}")
    else:  # nobody watches it: the next command finds it gone (no SHUTDOWN event)
        assert wait_until(lambda: lab.tv_json("domstate", name)["state"] == "shut off", 3)
        st = lab.state(name)
        assert st["reason"] == "crashed" and st["exit_status"] is None
        # ended: reaped by its adoptive parent (a zombie only under a subreaper that
        # never reaps, as in some sandboxes: docs/lifecycle.md, "Zombies")
        assert wait_until(lambda: not os.path.exists(f"/proc/{qemu}") or zombie(qemu), 5)
    assert lab.snapshot(g["dev"]) == g["before"]
    lab.tv("start", name)
    lab.wait_console(name, MARKER)
    lab.tv("destroy", name)


def test_shutdown_powers_the_guest_off(lab: Lab, booted: dict[str, dict[str, Any]]) -> None:
    lab.tv("start", "tv-user")
    lab.wait_console("tv-user", MARKER)
    out = lab.tv_json("shutdown", "tv-user", "--timeout", "30")
    assert out["state"] == "shut off" and out["reason"] == "shutdown"
    assert "TV-POWERDOWN" in lab.console("tv-user")


def test_broken_device_is_reported_and_start_fails_cleanly(lab: Lab) -> None:
    """A tap owned by another user: check names the code, start fails, nothing stays."""
    other = unique("tvx")
    lab.netns.exec("ip", "tuntap", "add", "mode", "tap", "user", "0", "name", other)
    lab.netns.ip("link", "set", other, "master", lab.bridge, "up")
    before = lab.snapshot(other)
    mac = "52:54:00:e2:00:09"
    lab.define("tv-bad", lab.domain_xml(
        "tv-bad", _iface("ethernet", mac, other), lab.image.cmdline(ip="10.213.0.99/24")))
    check = lab.as_user.tapvirt("check", "tv-bad", "--json", "--tun-node", str(lab.tun))
    assert check.returncode == 1, check.stderr
    assert "device-foreign-owner" in check.stdout and "Traceback" not in check.stderr
    proc = lab.tv("start", "tv-bad", check=False)
    assert proc.returncode == 1
    assert "error[device-foreign-owner]" in proc.stderr and "Traceback" not in proc.stderr
    assert lab.tv_json("domstate", "tv-bad")["state"] == "shut off"
    assert lab.snapshot(other) == before
    assert not (lab.rundir("tv-bad") / "qmp.sock").exists()


def test_concurrent_starts_one_wins_and_console_shows_the_boot(
    lab: Lab, booted: dict[str, dict[str, Any]],
) -> None:
    import subprocess

    from tests.support.sandbox import unprivileged_python

    if lab.tv_json("domstate", "tv-user")["state"] != "shut off":
        lab.tv("destroy", "tv-user")
    argv = lab.as_user.argv([unprivileged_python(), "-m", "tapvirt.cli.main", "start",
                             "tv-user"])
    procs = [subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    results = [(p.wait(60), p.stderr.read() if p.stderr else "") for p in procs]
    assert sorted(rc for rc, _ in results) == [0, 1], results
    loser = next(err for rc, err in results if rc == 1)
    assert "error[domain-busy]" in loser or "error[domain-running]" in loser
    assert len([r for r in lab.tv_json("list")["domains"] if r["name"] == "tv-user"]) == 1
    lab.wait_console("tv-user", MARKER)
    out = lab.tv("console", "tv-user", "--no-follow").stdout
    assert "TV-MARKER" in out
    lab.tv("destroy", "tv-user")
    assert lab.tv_json("domstate", "tv-user")["state"] == "shut off"


def test_a_warning_does_not_stop_the_start_but_is_shown(lab: Lab) -> None:
    """A tap that is administratively down: start works, says device-down and the fix."""
    down = unique("tvd")
    lab.netns.exec("ip", "tuntap", "add", "mode", "tap", "user", lab.user.name, "vnet_hdr",
                   "name", down)
    lab.define("tv-warn", lab.domain_xml(
        "tv-warn", _iface("ethernet", "52:54:00:e2:00:0a", down), lab.image.cmdline()))
    proc = lab.tv("start", "tv-warn")
    assert "warning[device-down]" in proc.stderr and f"ip link set {down} up" in proc.stderr
    info = lab.tv_json("dominfo", "tv-warn")
    assert info["state"] == "running"
    assert [w["code"] for w in info["warnings"]] == ["device-down"]
    lab.tv("destroy", "tv-warn")
