"""End to end: operating a running guest like virsh (issue #12), as the unprivileged user
with no capabilities, on devices root precreated in the lab's namespace.

One guest boots once and serves the module (its eth0 is a tap on the lab bridge). The
test guest reports hot-plugged interfaces on its console and gives each the address
10.213.<MAC octet 5>.<MAC octet 6>/24, so a NIC plugged in with MAC 52:54:00:00:01:0b is
reachable at 10.213.1.11 through its own device only (the host side carries 10.213.1.1).
The last test kills QEMU in the middle of a hotplug, so it runs last.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.e2e.lab import BRIDGE_IP, Lab, module_lab, wait_until, zombie
from tests.support.reaper import reap_orphans
from tests.support.sandbox import unique, unprivileged_python

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(shutil.which("qemu-system-x86_64") is None,
                       reason="qemu-system-x86_64 is not installed"),
]

NAME = "tv-hp"
MAC0 = "52:54:00:e3:00:01"
MARKER = r"TV-MARKER up=\S+ ip=(\S+) mac=(\S+)"


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    yield from module_lab()


@pytest.fixture(scope="module")
def guest(lab: Lab) -> dict[str, Any]:
    tap = lab.tap()
    unattached = lab.snapshot(tap)
    ip = lab.next_ip()
    iface = (f"    <interface type='ethernet'>\n      <mac address='{MAC0}'/>\n"
             f"      <target dev='{tap}' managed='no'/>\n      <model type='virtio'/>\n"
             "    </interface>")
    lab.define(NAME, lab.domain_xml(NAME, iface, lab.image.cmdline(ip=f"{ip}/24",
                                                                    peer=BRIDGE_IP)))
    lab.tv("start", NAME)
    lab.wait_console(NAME, r"TV-IFACES .*eth0")
    return {"ip": ip, "tap": tap, "before": unattached}


def since(lab: Lab, offset: int, pattern: str, timeout: float = 60) -> re.Match[str]:
    """Wait for `pattern` on the console after position `offset`."""
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


def tv(lab: Lab, *args: str) -> subprocess.CompletedProcess[str]:
    """A tapvirt verb that may open taps: with the lab's private tun node."""
    return lab.as_user.tapvirt(*args, "--tun-node", str(lab.tun))


def ping(lab: Lab, ip: str) -> bool:
    proc = lab.netns.exec("busybox", "ping", "-c", "2", "-W", "2", ip, check=False,
                          timeout=30)
    return proc.returncode == 0


def macs(lab: Lab) -> list[str]:
    return [r["mac"] for r in lab.tv_json("domiflist", NAME)["interfaces"]]


def test_hotplug_tap_ping_stats_link_addr_unplug(lab: Lab, guest: dict[str, Any]) -> None:
    mac, ip = "52:54:00:00:01:0b", "10.213.1.11"
    tap = unique("tvh")
    lab.netns.exec("ip", "tuntap", "add", "mode", "tap", "user", lab.user.name, "vnet_hdr",
                   "name", tap)
    lab.netns.ip("addr", "add", "10.213.1.1/24", "dev", tap)
    lab.netns.ip("link", "set", tap, "up")
    before = lab.snapshot(tap)
    offset = len(lab.console(NAME))
    proc = tv(lab, "attach-interface", NAME, "ethernet", tap, "--mac", mac, "--model",
              "virtio")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "Interface attached successfully"
    added = since(lab, offset, rf"TV-IF-ADD (\S+) mac={mac} ip={ip}")
    rows = lab.tv_json("domiflist", NAME)["interfaces"]
    assert {"interface": "net1", "type": "ethernet", "device": tap, "model": "virtio",
            "mac": mac} in rows
    assert f"<target dev='{tap}' managed='no'/>" in lab.tv("dumpxml", NAME).stdout
    assert wait_until(lambda: ping(lab, ip), 20), "host cannot ping the hot-plugged NIC"

    # counters move with traffic (guest view: what the host sent is the guest's rx)
    first = lab.tv_json("domifstat", NAME, tap)["stats"]
    assert ping(lab, ip)
    second = lab.tv_json("domifstat", NAME, tap)["stats"]
    assert second["rx_packets"] >= first["rx_packets"] + 2
    assert second["tx_packets"] >= first["tx_packets"] + 2
    text = lab.tv("domifstat", NAME, tap).stdout.splitlines()
    assert [line.split()[1] for line in text] == [
        "rx_bytes", "rx_packets", "rx_errs", "rx_drop", "tx_bytes", "tx_packets", "tx_errs",
        "tx_drop"]

    # the neighbour table of our namespace knows the guest now
    addrs = lab.tv_json("domifaddr", NAME, "--source", "arp")["addresses"]
    assert {"name": tap, "mac": mac, "protocol": "ipv4", "address": f"{ip}/0",
            "source": "arp"} in addrs

    # link down stops the traffic, up restores it
    assert lab.tv("domif-setlink", NAME, tap, "down").returncode == 0
    assert lab.tv("domif-getlink", NAME, mac).stdout.strip() == f"{mac} down"
    assert not ping(lab, ip)
    assert lab.tv("domif-setlink", NAME, tap, "up").returncode == 0
    assert wait_until(lambda: ping(lab, ip), 20)

    offset = len(lab.console(NAME))
    proc = lab.tv("detach-interface", NAME, "ethernet", "--mac", mac)
    assert proc.stdout.strip() == "Interface detached successfully"
    since(lab, offset, rf"TV-IF-DEL {added.group(1)}")
    assert mac not in macs(lab)
    assert "net1" not in lab.tv("dumpxml", NAME).stdout
    assert wait_until(lambda: lab.snapshot(tap) == before, 5), (lab.snapshot(tap), before)
    assert lab.tv_json("domstate", NAME)["state"] == "running"
    assert ping(lab, guest["ip"])  # eth0 kept working throughout


def test_hotplug_macvtap(lab: Lab, guest: dict[str, Any]) -> None:
    mac, ip = "52:54:00:00:02:0c", "10.213.2.12"
    mvt = lab.macvtap(mac)
    lab.netns.ip("addr", "add", "10.213.2.1/24", "dev", lab.bridge)
    before = lab.snapshot(mvt)
    dev = lab.scratch / "mvt.xml"
    dev.write_text(f"<interface type='ethernet'>\n  <mac address='{mac}'/>\n"
                   f"  <target dev='{mvt}' managed='no'/>\n  <model type='virtio'/>\n"
                   "</interface>\n")
    dev.chmod(0o644)
    offset = len(lab.console(NAME))
    proc = tv(lab, "attach-device", NAME, str(dev), "--live")
    assert proc.returncode == 0, proc.stderr
    added = since(lab, offset, rf"TV-IF-ADD (\S+) mac={mac} ip={ip}")
    assert wait_until(lambda: ping(lab, ip), 20), "host cannot ping through the macvtap"
    stats = lab.tv_json("domifstat", NAME, mvt)["stats"]
    assert stats["rx_packets"] > 0 and stats["tx_packets"] > 0
    offset = len(lab.console(NAME))
    assert lab.tv("detach-device", NAME, str(dev)).returncode == 0
    since(lab, offset, rf"TV-IF-DEL {added.group(1)}")
    assert mac not in macs(lab)
    assert lab.snapshot(mvt) == before


def helper_world(lab: Lab) -> list[str]:
    """A prefix running a command where qemu-bridge-helper works, as packagers set it up
    (Debian ships it without privileges and no /etc/qemu/bridge.conf): a private mount
    namespace where /etc/qemu/bridge.conf says 'allow all' (an overlay of /etc, nothing
    written to the host's) and the helper is a copy with the file capability
    CAP_NET_ADMIN (the packaged setuid root variant, minus the root uid). The helper opens
    /dev/net/tun, which this machine keeps 0600: the lab user's private tun node is bound
    over it there."""
    helper = lab.scratch / "qemu-bridge-helper"
    if not helper.exists():
        shutil.copy2("/usr/lib/qemu/qemu-bridge-helper", helper)
        helper.chmod(0o755)
        subprocess.run(["setcap", "cap_net_admin+ep", str(helper)], check=True)
        for d in ("etc-upper/qemu", "etc-work"):
            (lab.scratch / d).mkdir(parents=True)
        (lab.scratch / "etc-upper/qemu/bridge.conf").write_text("allow all\n")
    setup = (f"mount -t overlay overlay -o lowerdir=/etc,upperdir={lab.scratch}/etc-upper,"
             f"workdir={lab.scratch}/etc-work /etc && "
             f"mount --bind {helper} /usr/lib/qemu/qemu-bridge-helper && "
             f"mount --bind {lab.tun} /dev/net/tun && exec \"$@\"")
    return ["unshare", "--mount", "--propagation", "private", "sh", "-c", setup, "sh"]


def bridge_ports(lab: Lab, bridge: str) -> list[str]:
    out = lab.netns.exec("ip", "-j", "link", "show", "master", bridge).stdout
    return [link["ifname"] for link in json.loads(out or "[]")]


def test_hotplug_bridge_through_the_helper(lab: Lab, guest: dict[str, Any]) -> None:
    """Unprivileged onto a bridge: tapvirt runs qemu-bridge-helper, which makes a tap on
    the bridge and hands over its fd; the guest gets a NIC on it, pings through it, and
    the unplug takes the tap away with QEMU's fd. The user holds no capability; only the
    helper's file does (the bounding set lets it through, as on an ordinary login)."""
    mac, ip = "52:54:00:00:06:0f", "10.213.6.15"
    br = unique("tvbh")
    lab.netns.ip("link", "add", br, "type", "bridge")
    lab.netns.ip("addr", "add", "10.213.6.1/24", "dev", br)
    lab.netns.ip("link", "set", br, "up")
    user = dataclasses.replace(lab.as_user, bounding_set="-all,+net_admin")
    argv = [*helper_world(lab), *user.argv([
        unprivileged_python(), "-m", "tapvirt.cli.main", "attach-interface", NAME, "bridge",
        br, "--model", "virtio", "--mac", mac, "--live"])]
    caps = subprocess.run([*helper_world(lab), *user.argv(["grep", "^Cap[PE]",
                                                           "/proc/self/status"])],
                          capture_output=True, text=True, check=True).stdout
    assert caps.split() == ["CapPrm:", "0" * 16, "CapEff:", "0" * 16], caps
    assert bridge_ports(lab, br) == []
    offset = len(lab.console(NAME))
    proc = subprocess.run(argv, check=False, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "Interface attached successfully"
    ports = bridge_ports(lab, br)
    assert len(ports) == 1, ports
    tap = ports[0]
    added = since(lab, offset, rf"TV-IF-ADD (\S+) mac={mac} ip={ip}")
    rows = lab.tv_json("domiflist", NAME)["interfaces"]
    assert {"interface": "net1", "type": "bridge", "device": tap, "model": "virtio",
            "mac": mac} in rows, rows
    assert f"<source bridge='{br}'/>" in lab.tv("dumpxml", NAME).stdout
    assert wait_until(lambda: ping(lab, ip), 20), "host cannot ping through the bridge NIC"
    stats = lab.tv_json("domifstat", NAME, tap)["stats"]  # found by the helper's tap name
    assert stats["rx_packets"] > 0 and stats["tx_packets"] > 0, stats

    offset = len(lab.console(NAME))
    proc = lab.tv("detach-interface", NAME, "bridge", "--mac", mac)
    assert proc.stdout.strip() == "Interface detached successfully"
    since(lab, offset, rf"TV-IF-DEL {added.group(1)}")
    assert mac not in macs(lab)
    assert wait_until(lambda: lab.netns.link_json(tap) is None, 5), f"{tap} is still there"
    assert bridge_ports(lab, br) == []

    # --config: the stored definition gets the bridge NIC; nothing happens live
    dev = lab.scratch / "br.xml"
    dev.write_text(f"<interface type='bridge'>\n  <mac address='{mac}'/>\n"
                   f"  <source bridge='{br}'/>\n  <model type='virtio'/>\n</interface>\n")
    dev.chmod(0o644)
    stored = lab.user.home / ".config/tapvirt/domains" / f"{NAME}.xml"
    assert lab.tv("attach-device", NAME, str(dev), "--config").returncode == 0
    assert f"<source bridge='{br}'/>" in stored.read_text()
    assert bridge_ports(lab, br) == [] and mac not in macs(lab)
    assert lab.tv("detach-device", NAME, str(dev), "--config").returncode == 0
    assert mac not in stored.read_text()
    lab.netns.ip("link", "del", br)


def test_busy_and_foreign_taps_are_refused_cleanly(lab: Lab, guest: dict[str, Any]) -> None:
    busy = lab.tap()
    holder = subprocess.Popen(
        ["ip", "netns", "exec", lab.netns.name, "python3", "-c",
         "import fcntl,os,struct,sys,time\n"
         "fd=os.open('/dev/net/tun',os.O_RDWR)\n"
         f"fcntl.ioctl(fd,0x400454CA,struct.pack('16sH22x',b'{busy}',0x1002|0x4000))\n"
         "print('held',flush=True)\ntime.sleep(600)"],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        before = lab.tv_json("domiflist", NAME)["interfaces"]
        proc = tv(lab, "attach-interface", NAME, "ethernet", busy, "--mac",
                  "52:54:00:00:03:01", "--json")
        assert proc.returncode == 1 and '"device-busy"' in proc.stdout, proc.stdout
        assert lab.tv_json("domiflist", NAME)["interfaces"] == before
    finally:
        holder.kill()
        holder.wait()
    foreign = unique("tvf")
    lab.netns.exec("ip", "tuntap", "add", "mode", "tap", "user", "0", "name", foreign)
    snap = lab.snapshot(foreign)
    proc = tv(lab, "attach-interface", NAME, "ethernet", foreign, "--mac", "52:54:00:00:03:02")
    assert proc.returncode == 1 and "error[device-foreign-owner]" in proc.stderr
    assert "Traceback" not in proc.stderr and lab.snapshot(foreign) == snap
    # the guest's own tap cannot serve a second NIC
    proc = tv(lab, "attach-interface", NAME, "ethernet", guest["tap"], "--mac",
              "52:54:00:00:03:03")
    assert proc.returncode == 1 and "error[device-duplicate]" in proc.stderr
    # a managed device needs privileges: said before anything is tried
    proc = tv(lab, "attach-interface", NAME, "direct", lab.bridge, "--json")
    assert '"hotplug-needs-privilege"' in proc.stdout
    assert lab.tv_json("domiflist", NAME)["interfaces"] == [
        r for r in lab.tv_json("domiflist", NAME)["interfaces"] if r["mac"] == MAC0]


def test_suspend_resume_stop_and_restart_traffic(lab: Lab, guest: dict[str, Any]) -> None:
    assert ping(lab, guest["ip"])
    assert lab.tv("suspend", NAME).stdout.strip() == f"Domain '{NAME}' suspended"
    assert lab.tv("domstate", NAME, "--reason").stdout.strip() == "paused (user)"
    assert not ping(lab, guest["ip"])
    assert lab.tv("resume", NAME).returncode == 0
    assert lab.tv_json("domstate", NAME)["state"] == "running"
    assert wait_until(lambda: ping(lab, guest["ip"]), 20)


def test_unplug_the_guest_does_not_answer_then_completes(lab: Lab,
                                                        guest: dict[str, Any]) -> None:
    """A paused guest cannot release a NIC: the detach times out with hotplug-refused
    and the NIC stays recorded. Resumed, the guest completes the unplug by itself; the
    next detach finds the device gone and removes the rest."""
    mac = "52:54:00:00:04:0d"
    tap = lab.tap()
    before = lab.snapshot(tap)
    offset = len(lab.console(NAME))
    assert tv(lab, "attach-interface", NAME, "ethernet", tap, "--mac", mac, "--model",
              "virtio").returncode == 0
    added = since(lab, offset, rf"TV-IF-ADD (\S+) mac={mac}")
    lab.tv("suspend", NAME)
    proc = lab.tv("detach-interface", NAME, "ethernet", "--mac", mac, "--timeout", "2",
                  check=False)
    assert proc.returncode == 1 and "error[hotplug-refused]" in proc.stderr, proc.stderr
    assert mac in macs(lab)
    offset = len(lab.console(NAME))
    lab.tv("resume", NAME)
    since(lab, offset, rf"TV-IF-DEL {added.group(1)}")
    assert lab.tv("detach-interface", NAME, "ethernet", "--mac", mac).returncode == 0
    assert mac not in macs(lab)
    assert wait_until(lambda: lab.snapshot(tap) == before, 5)


def test_reboot_reset_and_acpi(lab: Lab, guest: dict[str, Any]) -> None:
    markers = len(re.findall(MARKER, lab.console(NAME)))
    pid = lab.tv_json("dominfo", NAME)["qemu_pid"]
    assert lab.tv("reboot", NAME, "--mode", "reset").stdout.strip() == \
        f"Domain '{NAME}' is being rebooted"
    assert wait_until(lambda: len(re.findall(MARKER, lab.console(NAME))) > markers, 90)
    assert lab.tv_json("dominfo", NAME)["qemu_pid"] == pid
    lab.wait_console(NAME, r"TV-PING-OK[^\n]*\n(?:.|\n)*TV-IFACES")
    if not lab.tv_json("dominfo", NAME)["supervised"]:
        # acpi without supervisor: libvirt's fake reboot, the same QEMU powers off
        # (paused), is reset and runs again; `reboot` returns once it is running
        markers = len(re.findall(MARKER, lab.console(NAME)))
        assert lab.tv("reboot", NAME, timeout=200).returncode == 0
        info = lab.tv_json("dominfo", NAME)
        assert info["qemu_pid"] == pid and info["state"] == "running"
        assert wait_until(lambda: len(re.findall(MARKER, lab.console(NAME))) > markers, 90)
        assert wait_until(lambda: ping(lab, guest["ip"]), 30)
        return
    # acpi: the guest powers off, the supervisor starts a fresh QEMU
    assert lab.tv("reboot", NAME).returncode == 0
    assert wait_until(lambda: lab.tv_json("dominfo", NAME)["qemu_pid"] not in (None, pid), 60)
    lab.wait_console(NAME, MARKER, timeout=90)  # a new console log: the new boot
    info = lab.tv_json("dominfo", NAME)
    assert info["state"] == "running" and info["restarts"] == 1
    assert wait_until(lambda: ping(lab, guest["ip"]), 30)


def test_qemu_killed_during_a_hotplug(lab: Lab, guest: dict[str, Any]) -> None:
    """Last: kills the guest. A detach is waiting for a (paused) guest when QEMU is
    killed: the detach fails with a code, the domain is shut off (crashed), nothing of
    it runs, both taps are as root made them."""
    tap = lab.tap()
    before = lab.snapshot(tap), guest["before"]
    mac = "52:54:00:00:05:0e"
    assert tv(lab, "attach-interface", NAME, "ethernet", tap, "--mac", mac, "--model",
              "virtio").returncode == 0
    lab.tv("suspend", NAME)
    info = lab.tv_json("dominfo", NAME)
    detach = subprocess.Popen(
        lab.as_user.argv(["python3", "-m", "tapvirt.cli.main", "detach-interface", NAME,
                          "ethernet", "--mac", mac, "--timeout", "30"]),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(2)
    os.kill(info["qemu_pid"], signal.SIGKILL)
    _, err = detach.communicate(timeout=60)
    assert detach.returncode == 1 and re.search(
        r"error\[(qmp-unavailable|control-failed|domain-not-running)\]", err), err
    assert wait_until(lambda: lab.tv_json("domstate", NAME)["state"] == "shut off", 10)
    assert lab.tv_json("domstate", NAME)["reason"] == "crashed"
    for pid in (info["qemu_pid"], info["supervisor_pid"]):
        # ended (a zombie only until the test, their subreaper, reaps it)
        assert wait_until(lambda p=pid: not os.path.exists(f"/proc/{p}") or zombie(p), 10)
    reap_orphans()
    assert not (lab.rundir(NAME) / "control.sock").exists()
    assert wait_until(lambda: (lab.snapshot(tap), lab.snapshot(guest["tap"])) == before, 5)
