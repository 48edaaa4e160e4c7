"""End to end: live NIC hotplug on a q35 guest (issue #12), as the unprivileged user with
no capabilities, on taps root precreated in the lab's namespace.

q35's root bus (pcie.0) cannot hot-plug: a NIC goes onto a free pcie-root-port. A new q35
definition gets the controllers its devices need plus one empty pcie-root-port, as
libvirt 9.0 adds them; so one NIC can be plugged in, a second one finds no free port and
is refused with no-pci-slot naming the fix, and after the unplug the port is free again.

The guest also has a guest agent channel without a path, but its qemu-guest-agent is
not started (tvagent=0): the socket in the runtime directory (0600), and the agent verbs
failing by name within their timeout while the guest keeps running (a real agent:
tests/e2e/test_agent.py).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
import subprocess
import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.e2e.lab import BRIDGE_IP, Lab, module_lab, wait_until
from tests.support.sandbox import unique

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(shutil.which("qemu-system-x86_64") is None,
                       reason="qemu-system-x86_64 is not installed"),
]

NAME = "tv-hpq"
MAC0 = "52:54:00:e3:00:21"


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    yield from module_lab()


@pytest.fixture(scope="module")
def guest(lab: Lab) -> Iterator[dict[str, Any]]:
    tap = lab.tap()
    ip = lab.next_ip()
    iface = (f"    <interface type='ethernet'>\n      <mac address='{MAC0}'/>\n"
             f"      <target dev='{tap}' managed='no'/>\n      <model type='virtio'/>\n"
             "    </interface>\n"
             "    <channel type='unix'>\n"
             "      <target type='virtio' name='org.qemu.guest_agent.0'/>\n"
             "    </channel>")
    xml = lab.domain_xml(NAME, iface, lab.image.cmdline(ip=f"{ip}/24", peer=BRIDGE_IP,
                                                         agent=False))
    lab.define(NAME, xml.replace("machine='pc'", "machine='q35'"))
    lab.tv("start", NAME)
    lab.wait_console(NAME, r"TV-IFACES .*eth0")
    yield {"ip": ip, "tap": tap}
    lab.tv("destroy", NAME, check=False)


def since(lab: Lab, offset: int, pattern: str, timeout: float = 90) -> re.Match[str]:
    rx = re.compile(pattern)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        m = rx.search(lab.console(NAME), offset)
        if m:
            return m
        time.sleep(0.2)
    log = (lab.rundir(NAME) / "supervisor.log").read_text()[-1500:]
    raise AssertionError(f"no {pattern!r} within {timeout} s; console:\n"
                         f"{lab.console(NAME)[-2000:]}\nsupervisor log:\n{log}")


def ping(lab: Lab, ip: str) -> bool:
    proc = lab.netns.exec("busybox", "ping", "-c", "2", "-W", "2", ip, check=False,
                          timeout=30)
    return proc.returncode == 0


def precreated_tap(lab: Lab, host_ip: str) -> str:
    tap = unique("tvq")
    lab.netns.exec("ip", "tuntap", "add", "mode", "tap", "user", lab.user.name, "vnet_hdr",
                   "name", tap)
    lab.netns.ip("addr", "add", host_ip, "dev", tap)
    lab.netns.ip("link", "set", tap, "up")
    return tap


def attach(lab: Lab, tap: str, mac: str) -> subprocess.CompletedProcess[str]:
    return lab.as_user.tapvirt("attach-interface", NAME, "ethernet", tap, "--mac", mac,
                               "--model", "virtio", "--json", "--tun-node", str(lab.tun))


def test_definition_has_one_spare_root_port(lab: Lab, guest: dict[str, Any]) -> None:
    """libvirt 9.0 gives this XML a pcie-root-port per PCI device plus one empty one
    (its argv for the same document: ports pci.1-pci.4 for NIC, USB, balloon and the
    spare); tapvirt the same spare, whatever the implicit devices."""
    xml = lab.tv("dumpxml", NAME).stdout
    ports = {int(m.group(1), 0) for m in re.finditer(
        r"<controller type='pci' index='(\d+)' model='pcie-root-port'>", xml)}
    used = {int(m.group(1), 16) for m in re.finditer(
        r"<address type='pci' domain='0x0000' bus='0x([0-9a-f]+)'", xml)}
    assert len(ports - used) == 1, xml


def test_q35_hotplug_onto_the_free_root_port(lab: Lab, guest: dict[str, Any]) -> None:
    mac, ip = "52:54:00:00:07:10", "10.213.7.16"
    tap = precreated_tap(lab, "10.213.7.1/24")
    before = lab.snapshot(tap)
    offset = len(lab.console(NAME))
    proc = attach(lab, tap, mac)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    added = since(lab, offset, rf"TV-IF-ADD (\S+) mac={mac} ip={ip}")
    assert wait_until(lambda: ping(lab, ip), 30), "host cannot ping the hot-plugged NIC"
    assert ping(lab, guest["ip"])

    # the only spare port is taken now: a second NIC is refused by name, with the fix
    other = lab.tap()
    snap = lab.snapshot(other)
    rows = lab.tv_json("domiflist", NAME)["interfaces"]
    proc = attach(lab, other, "52:54:00:00:07:11")
    assert proc.returncode == 1, proc.stdout
    err = json.loads(proc.stdout)["error"]
    assert err["code"] == "no-pci-slot", err
    assert "<controller type='pci' model='pcie-root-port'/>" in err["fix"], err
    assert lab.tv_json("domiflist", NAME)["interfaces"] == rows
    assert lab.snapshot(other) == snap

    offset = len(lab.console(NAME))
    proc = lab.tv("detach-interface", NAME, "ethernet", "--mac", mac, "--timeout", "30")
    assert proc.stdout.strip() == "Interface detached successfully"
    since(lab, offset, rf"TV-IF-DEL {added.group(1)}")
    assert mac not in [r["mac"] for r in lab.tv_json("domiflist", NAME)["interfaces"]]
    assert wait_until(lambda: lab.snapshot(tap) == before, 5), (lab.snapshot(tap), before)

    # the port is free again: the other NIC goes in now
    proc = attach(lab, other, "52:54:00:00:07:11")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert lab.tv("detach-interface", NAME, "ethernet", "--mac", "52:54:00:00:07:11",
                  "--timeout", "30").returncode == 0
    assert wait_until(lambda: lab.snapshot(other) == snap, 5)
    assert ping(lab, guest["ip"])


def test_agent_channel_socket_and_a_guest_without_an_agent(lab: Lab,
                                                          guest: dict[str, Any]) -> None:
    sock = lab.rundir(NAME) / "org.qemu.guest_agent.0.sock"
    st = os.stat(sock)
    assert stat.S_ISSOCK(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o600, oct(st.st_mode)
    assert st.st_uid == lab.user.uid
    for verb in (("domifaddr", NAME, "--source", "agent"),
                 ("shutdown", NAME, "--mode", "agent"),
                 ("reboot", NAME, "--mode", "agent")):
        t0 = time.monotonic()
        proc = lab.tv(*verb, "--json", check=False)
        assert proc.returncode == 1, proc.stdout + proc.stderr
        err = json.loads(proc.stdout)["error"]
        assert err["code"] == "agent-unresponsive", err
        assert "5 s" in err["cause"] and "qemu-guest-agent" in err["fix"], err
        assert time.monotonic() - t0 < 60
        assert lab.tv_json("domstate", NAME)["state"] == "running"
    assert ping(lab, guest["ip"])


def test_state_follows_a_stop_and_cont_behind_tapvirts_back(lab: Lab,
                                                           guest: dict[str, Any]) -> None:
    """The supervisor follows QEMU's STOP/RESUME events: a raw monitor `stop` (no verb
    of tapvirt's knows it) makes the state paused (unknown, as libvirt says), `cont`
    running again (unpaused)."""
    assert lab.tv("qemu-monitor-command", NAME, '{"execute":"stop"}').returncode == 0
    assert wait_until(lambda: lab.tv_json("domstate", NAME)["state"] == "paused", 10)
    assert lab.tv("domstate", NAME, "--reason").stdout.strip() == "paused (unknown)"
    assert not ping(lab, guest["ip"])
    assert lab.tv("qemu-monitor-command", NAME, '{"execute":"cont"}').returncode == 0
    assert wait_until(lambda: lab.tv_json("domstate", NAME)["state"] == "running", 10)
    assert lab.tv("domstate", NAME, "--reason").stdout.strip() == "running (unpaused)"
    assert wait_until(lambda: ping(lab, guest["ip"]), 20)
    log = (lab.rundir(NAME) / "supervisor.log").read_text()
    assert "event STOP: paused (unknown)" in log and "event RESUME" in log
