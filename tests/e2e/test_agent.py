"""End to end (issues 10 and 12): the guest agent verbs against a real qemu-guest-agent
(Debian's, in the test guest's initramfs, started by its /init on the virtio-serial port
named org.qemu.guest_agent.0), as the unprivileged user on a precreated tap.

`domifaddr --source agent` finds the address the guest really has; `domhostname` and
`guestinfo` report the guest's host name, OS and timezone; `reboot --mode agent`
reboots it through the agent (the guest boots again in the same QEMU, and the agent
answers again); `shutdown --mode agent` powers it off: shut off (shutdown)."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from typing import Any

import pytest

from tests.e2e.lab import BRIDGE_IP, Lab, module_lab, wait_until

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(shutil.which("qemu-system-x86_64") is None,
                       reason="qemu-system-x86_64 is not installed"),
]

NAME = "tv-agent"
MAC = "52:54:00:e2:40:01"


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    yield from module_lab()


@pytest.fixture(scope="module")
def guest(lab: Lab) -> Iterator[dict[str, Any]]:
    ip = lab.next_ip()
    devices = (f"    <interface type='ethernet'>\n      <mac address='{MAC}'/>\n"
               f"      <target dev='{lab.tap()}' managed='no'/>\n"
               "      <model type='virtio'/>\n    </interface>\n"
               "    <channel type='unix'>\n"
               "      <target type='virtio' name='org.qemu.guest_agent.0'/>\n"
               "    </channel>")
    lab.define(NAME, lab.domain_xml(NAME, devices,
                                    lab.image.cmdline(ip=f"{ip}/24", peer=BRIDGE_IP)))
    lab.tv("start", NAME)
    lab.wait_console(NAME, r"TV-AGENT /dev/vport\S+", timeout=120)
    lab.wait_console(NAME, r"TV-MARKER", timeout=60)
    yield {"ip": ip}
    lab.tv("destroy", NAME, check=False)


def _agent_ipv4(lab: Lab) -> list[dict[str, Any]]:
    rows = lab.tv_json("domifaddr", NAME, "--source", "agent")["addresses"]
    return [r for r in rows if r["protocol"] == "ipv4"]


def test_domifaddr_from_the_real_agent(lab: Lab, guest: dict[str, Any]) -> None:
    rows = _agent_ipv4(lab)
    assert rows == [{"name": "eth0", "mac": MAC, "protocol": "ipv4",
                     "address": f"{guest['ip']}/24", "source": "agent"}], rows
    text = lab.tv("domifaddr", NAME, "--source", "agent").stdout
    assert f"{guest['ip']}/24" in text and "eth0" in text and "lo " not in text


def test_hostname_and_guestinfo_from_the_real_agent(lab: Lab, guest: dict[str, Any]) -> None:
    assert lab.tv("domhostname", NAME).stdout.strip() == "tvguest"  # set by its /init
    info = lab.tv_json("guestinfo", NAME)["info"]
    assert info["hostname"] == "tvguest"
    assert info["os.id"] == "tapvirt-test" and info["os.machine"] == "x86_64"
    assert info["os.kernel-release"] == lab.image.kernel_version, info
    assert info["timezone.offset"] == "0" and info["user.count"] == "0", info
    text = lab.tv("guestinfo", NAME).stdout
    assert "os.pretty-name      : tapvirt test guest (busybox)" in text, text


def test_reboot_through_the_agent(lab: Lab, guest: dict[str, Any]) -> None:
    qemu = lab.state(NAME)["qemu_pid"]
    before = lab.console(NAME).count("TV-MARKER")
    lab.tv("reboot", NAME, "--mode", "agent")
    lab.wait_console(NAME, r"TV-AGENT-REBOOT", timeout=60)
    assert wait_until(lambda: lab.console(NAME).count("TV-MARKER") > before, 120, 0.3), \
        lab.console(NAME)[-1500:]
    assert lab.state(NAME)["qemu_pid"] == qemu  # rebooted inside the same QEMU
    assert lab.tv_json("domstate", NAME)["state"] == "running"
    # the agent of the rebooted guest answers (it may need a moment to start)
    assert wait_until(lambda: bool(lab.tv("domifaddr", NAME, "--source", "agent",
                                          check=False).returncode == 0), 60, 1.0)
    assert _agent_ipv4(lab)[0]["address"] == f"{guest['ip']}/24"


def test_shutdown_through_the_agent(lab: Lab, guest: dict[str, Any]) -> None:
    lab.tv("shutdown", NAME, "--mode", "agent", "--timeout", "60")
    assert wait_until(lambda: lab.tv("domstate", NAME, "--reason").stdout.strip()
                      == "shut off (shutdown)", 60, 0.3), lab.tv("domstate", NAME,
                                                                  "--reason").stdout
    assert "TV-AGENT-SHUTDOWN" in lab.console(NAME)
