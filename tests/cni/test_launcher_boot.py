"""Across the seam as in a pod: tapvirt-cni (root, from the host namespace, as the
runtime runs it) makes each kind of device it can in a pod namespace, and uid 107 with
no capabilities runs the guest on it with `tapvirt run` (the container's foreground
mode): the guest boots, pings the pod-side peer, powers off, and `run` exits 0 with the
console on its stdout. SIGTERM to `run` powers a guest off over ACPI."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.cni.conftest import Cni
from tests.support import guest
from tests.support.sandbox import AsUser, CodeCopy, Netns, User, private_tun_node, run

pytestmark = pytest.mark.e2e

QEMU_UID = 107  # KubeVirt's (and the launcher image's) qemu user


@pytest.fixture
def image() -> guest.GuestImage:
    img = guest.cached()
    if img is None or shutil.which("qemu-system-x86_64") is None:
        pytest.skip("needs QEMU and the cached test guest (python -m tests.support.guest build)")
    return img


@pytest.fixture
def qemu_user(scratch: Path) -> Iterator[User]:
    """uid/gid 107, created for the test when free (removed after)."""
    import grp
    import pwd

    made_user = made_group = False
    name = "tv-qemu107"
    try:
        grp.getgrgid(QEMU_UID)
    except KeyError:  # only the number matters: reuse a group 107 another package made
        run(["groupadd", "-g", str(QEMU_UID), name])
        made_group = True
    try:
        name = pwd.getpwuid(QEMU_UID).pw_name
    except KeyError:
        run(["useradd", "--system", "-u", str(QEMU_UID), "-g", str(QEMU_UID),
             "--no-create-home", "--shell", "/usr/sbin/nologin", name])
        made_user = True
    home = scratch / "home107"
    home.mkdir()
    os.chown(home, QEMU_UID, QEMU_UID)
    user = User(name, QEMU_UID, QEMU_UID, home)
    try:
        yield user
    finally:
        if made_user:
            run(["userdel", name], check=False)
        if made_group:
            run(["groupdel", "tv-qemu107"], check=False)


@pytest.fixture
def launcher(qemu_user: User, netns: Netns, code_copy: CodeCopy, scratch: Path) -> AsUser:
    xdg = scratch / "xdg"
    xdg.mkdir(mode=0o700)
    os.chown(xdg, QEMU_UID, QEMU_UID)
    return AsUser(qemu_user, netns, code_copy, env={"XDG_RUNTIME_DIR": str(xdg)})


def domain_xml(name: str, image: guest.GuestImage, iface: str, cmdline: str) -> str:
    return f"""<domain type='qemu'>
  <name>{name}</name>
  <memory unit='MiB'>192</memory>
  <vcpu>1</vcpu>
  <os><type arch='x86_64' machine='pc'>hvm</type>
    <kernel>{image.kernel}</kernel><initrd>{image.initrd}</initrd>
    <cmdline>{cmdline}</cmdline></os>
  <features><acpi/></features>
  <devices>
    {iface}
  </devices>
</domain>
"""


def _iface(dev: str, mac: str, *, queues: int = 1, node: str | None = None) -> str:
    driver = f"<driver queues='{queues}'/>" if queues > 1 else ""
    backend = f"<backend tap='{node}'/>" if node else ""
    return (f"<interface type='ethernet'><mac address='{mac}'/>"
            f"<target dev='{dev}' managed='no'/><model type='virtio'/>{driver}{backend}"
            "</interface>")


def _write(scratch: Path, name: str, text: str) -> Path:
    path = scratch / f"{name}.xml"
    path.write_text(text)
    path.chmod(0o644)
    return path


def _run_guest(launcher: AsUser, tun: Path, xml: Path) -> subprocess.CompletedProcess[str]:
    return launcher.tapvirt("run", str(xml), "--tun-node", str(tun), timeout=240)


def test_uid_107_boots_and_pings_on_every_kind_of_device_tapvirt_cni_makes(
    cni: Cni, launcher: AsUser, image: guest.GuestImage, scratch: Path
) -> None:
    ns = cni.netns
    tun = private_tun_node(scratch, QEMU_UID, QEMU_UID, 0o600)
    ns.ip("link", "add", "br0", "type", "bridge")
    ns.ip("addr", "add", "10.213.3.1/24", "dev", "br0")
    ns.ip("link", "set", "br0", "up")
    ns.ip("link", "add", "ve0", "type", "veth", "peer", "name", "ve1")
    ns.ip("addr", "add", "10.213.4.1/24", "dev", "ve1")
    ns.ip("link", "set", "ve1", "up")
    ns.ip("link", "set", "ve0", "up")
    cases: list[tuple[str, dict[str, Any], int, int, str | None]] = [
        # (device, configuration keys, queues, subnet, device that gets the peer address)
        ("tap0", {}, 1, 1, "tap0"),
        ("mq0", {"multiQueue": True}, 2, 2, "mq0"),
        ("brt0", {"bridge": "br0"}, 1, 3, None),
        ("mv0", {"macvtap": {"link": "ve0"}, "mac": "52:54:00:0e:04:02"}, 1, 4, None),
    ]
    for i, (dev, keys, queues, net, peer_dev) in enumerate(cases):
        res = cni.ok("ADD", cni.conf(**keys), ifname=dev, cid=f"pod{i}").out
        iface = res["interfaces"][-1]
        if peer_dev:
            ns.ip("addr", "add", f"10.213.{net}.1/24", "dev", peer_dev)
        node = iface.get("tapvirtNode")
        mac = iface["mac"] if node else f"52:54:00:0e:0{net}:02"
        cmdline = image.cmdline(ip=f"10.213.{net}.2/24", peer=f"10.213.{net}.1",
                                poweroff_after=8)
        xml = _write(scratch, f"vm-{dev}", domain_xml(
            f"vm-{dev}", image, _iface(dev, mac, queues=queues, node=node), cmdline))
        proc = _run_guest(launcher, tun, xml)
        assert proc.returncode == 0, (dev, proc.stdout[-2000:], proc.stderr[-2000:])
        assert "TV-MARKER" in proc.stdout and "TV-PING-OK" in proc.stdout, (dev, proc.stdout)
        assert "ended: shutdown" in proc.stderr, proc.stderr
        cni.ok("DEL", cni.conf(**keys), ifname=dev, cid=f"pod{i}")
        assert ns.link_json(dev) is None
    assert not list(cni.node_dir.rglob("cni.*"))


def _popen_run(launcher: AsUser, target: str, tun: Path) -> subprocess.Popen[bytes]:
    python = ("/opt/tapvirt/venv/bin/python" if os.access("/opt/tapvirt/venv/bin/python",
                                                           os.X_OK) else "python3")
    return subprocess.Popen(launcher.argv([
        python, "-m", "tapvirt.cli.main", "run", target, "--tun-node", str(tun),
        "--shutdown-timeout", "60"]), stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _read_until(proc: subprocess.Popen[bytes], marker: bytes, timeout: float = 180) -> bytes:
    assert proc.stdout is not None
    os.set_blocking(proc.stdout.fileno(), False)
    out = b""
    deadline = time.monotonic() + timeout
    while marker not in out and time.monotonic() < deadline and proc.poll() is None:
        with contextlib.suppress(BlockingIOError, TypeError):
            out += proc.stdout.read() or b""
        time.sleep(0.2)
    return out


def _guest_on_tap0(cni: Cni, image: guest.GuestImage, scratch: Path, name: str) -> Path:
    cni.ok("ADD", ifname="tap0")
    cni.netns.ip("addr", "add", "10.213.1.1/24", "dev", "tap0")
    cmdline = image.cmdline(ip="10.213.1.2/24", peer="10.213.1.1")
    return _write(scratch, name, domain_xml(name, image, _iface("tap0", "52:54:00:0e:01:02"),
                                            cmdline))


def test_tapvirt_run_turns_sigterm_into_an_acpi_power_off(
    cni: Cni, launcher: AsUser, image: guest.GuestImage, scratch: Path
) -> None:
    tun = private_tun_node(scratch, QEMU_UID, QEMU_UID, 0o600)
    xml = _guest_on_tap0(cni, image, scratch, "vm-term")
    defined = launcher.tapvirt("define", str(xml))
    assert defined.returncode == 0, defined.stderr
    proc = _popen_run(launcher, "vm-term", tun)  # by NAME: the defined domain
    try:
        out = _read_until(proc, b"TV-PING-OK")
        assert b"TV-PING-OK" in out, out[-2000:]
        # the launcher runs as uid 107: a signal from the runtime (root) reaches it
        proc.send_signal(signal.SIGTERM)
        rest, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    out += rest
    assert proc.returncode == 0, (out[-2000:], err[-2000:])
    assert b"TV-POWERDOWN" in out
    assert b"ACPI power-down" in err and b"ended: shutdown" in err
    state = launcher.tapvirt("domstate", "vm-term", "--reason")
    assert state.stdout.strip() == "shut off (shutdown)", state.stdout


def test_tapvirt_run_exits_3_when_the_guest_crashes(
    cni: Cni, launcher: AsUser, image: guest.GuestImage, scratch: Path
) -> None:
    tun = private_tun_node(scratch, QEMU_UID, QEMU_UID, 0o600)
    xml = _guest_on_tap0(cni, image, scratch, "vm-crash")
    proc = _popen_run(launcher, str(xml), tun)
    try:
        out = _read_until(proc, b"TV-MARKER")
        assert b"TV-MARKER" in out, out[-2000:]
        state_file = Path(launcher.env["XDG_RUNTIME_DIR"]) / "tapvirt/vm-crash/state.json"
        qemu = json.loads(state_file.read_text())["qemu_pid"]
        os.kill(qemu, signal.SIGKILL)
        _out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 3, err[-2000:]
    assert b"ended: crashed" in err


def test_tapvirt_run_fails_with_exit_1_and_a_coded_error_when_nothing_can_start(
    launcher: AsUser, scratch: Path
) -> None:
    proc = launcher.tapvirt("run", "no-such-domain")
    assert proc.returncode == 1 and "domain-not-found" in proc.stderr, proc.stderr
    missing = scratch / "missing.xml"
    proc = launcher.tapvirt("run", str(missing))
    assert proc.returncode == 1 and "file-unreadable" in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr
