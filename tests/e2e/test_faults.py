"""Faults and limits, end to end: tapvirt run by an unprivileged user on devices root
precreated in a namespace (issue 13: fd counts, destroy during start, full and
unwritable runtime directories, killed processes).

Every case ends in a consistent, named state: the error has its own code, `list` works,
precreated devices are unchanged, and no process, fd or runtime file is left behind.
"""

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

import pytest

from tests.e2e.lab import Lab, module_lab, wait_until
from tests.support.sandbox import unprivileged_python

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(shutil.which("qemu-system-x86_64") is None,
                       reason="qemu-system-x86_64 is not installed"),
]


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    yield from module_lab()


def _iface(mac: str, dev: str, queues: int | None = None) -> str:
    driver = f"\n      <driver queues='{queues}'/>" if queues else ""
    return (f"    <interface type='ethernet'>\n      <mac address='{mac}'/>\n"
            f"      <target dev='{dev}' managed='no'/>\n"
            f"      <model type='virtio'/>{driver}\n    </interface>")


def _holders(pid: int, dev: str) -> int:
    """How many of the process's fds are attached to tap `dev`."""
    n = 0
    for f in Path(f"/proc/{pid}/fdinfo").iterdir():
        try:
            if f"iff:\t{dev}\n" in f.read_text():
                n += 1
        except OSError:
            continue
    return n


def _runtime_files(lab: Lab, name: str) -> list[str]:
    d = lab.rundir(name)
    return sorted(p.name for p in d.iterdir()) if d.is_dir() else []


@pytest.mark.parametrize("layout", [(256,), (64, 64, 64, 64, 64)],
                         ids=["one-nic-256-queues", "five-nics-64-queues"])
def test_more_fds_than_one_scm_rights_message(lab: Lab, layout: tuple[int, ...]) -> None:
    """256 queues (the kernel's maximum) on one tap, or 5 x 64: more than the 253 fds one
    SCM_RIGHTS message carries. The start works and QEMU holds every queue."""
    name = f"tv-fds{len(layout)}"
    taps = [lab.tap(multi_queue=True) for _ in layout]
    before = {t: lab.snapshot(t) for t in taps}
    ifaces = "\n".join(_iface(f"52:54:00:13:07:{i:02x}", t, q)
                       for i, (t, q) in enumerate(zip(taps, layout, strict=True)))
    lab.define(name, lab.domain_xml(name, ifaces, lab.image.cmdline(ip="10.213.0.99/24")))
    proc = lab.tv("start", name, "--paused", "--json", check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    qemu = json.loads(proc.stdout)["qemu_pid"]
    try:
        assert [_holders(qemu, t) for t in taps] == list(layout)
        st = lab.state(name)
        assert _holders(st["supervisor_pid"], taps[0]) in (0, layout[0])  # kept for restarts
    finally:
        lab.tv("destroy", name)
    assert {t: lab.snapshot(t) for t in taps} == before


def test_destroy_during_start_says_so(lab: Lab) -> None:
    """`destroy` while `start` runs: the start reports destroyed-while-starting (not
    QEMU's SIGTERM), the state is shut off (destroyed), the device is unchanged."""
    name = "tv-dds"
    tap = lab.tap()
    before = lab.snapshot(tap)
    lab.define(name, lab.domain_xml(name, _iface("52:54:00:13:0b:01", tap),
                                    lab.image.cmdline(ip="10.213.0.98/24")))
    outcomes: list[str] = []
    for delay in (0.0, 0.15, 0.4):
        start = subprocess.Popen(
            lab.as_user.argv([unprivileged_python(), "-m", "tapvirt.cli.main", "start", name,
                              "--json", "--tun-node", str(lab.tun)]),
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        time.sleep(delay)

        def this_start_began(start: subprocess.Popen[str] = start) -> bool:
            # the state file of the round before says "shut off": wait for this start's
            # own record (a fast destroy would otherwise come before the start began)
            with contextlib.suppress(OSError, ValueError):
                state = json.loads((lab.rundir(name) / "state.json").read_text())
                if state.get("state") != "shut off":
                    return True
            return start.poll() is not None

        wait_until(this_start_began, 10, 0.005)
        d = lab.tv("destroy", name, "--json", check=False)
        out, err = start.communicate(timeout=60)
        if start.returncode == 0:  # the start won the race: destroy stopped a running guest
            assert json.loads(d.stdout)["state"] == "shut off"
            outcomes.append("started-then-destroyed")
        else:
            res = json.loads(out)
            assert res["error"]["code"] == "destroyed-while-starting", out + err
            assert "destroyed while starting" in res["error"]["cause"]
            outcomes.append("destroyed-while-starting")
        st = lab.tv_json("domstate", name, "--reason")
        assert st["state"] == "shut off" and st["reason"] == "destroyed", st
        assert lab.snapshot(tap) == before
    if lab.supervised:  # without a supervisor, destroy waits for the launcher to finish
        assert "destroyed-while-starting" in outcomes, outcomes
    assert lab.tv("start", name, "--paused", check=False).returncode == 0
    lab.tv("destroy", name)


# -- the fault matrix: SIGKILL at every phase of start ------------------------------------

RUNTIME_FILES = {"lock", "supervisor.lock", "state.json", "console.log", "console.log.old",
                 "qemu.log", "supervisor.log", "domain.xml", "ops.lock"}


def _tap_holders(dev: str) -> list[int]:
    """Every process holding an fd on tap `dev` (none may stay after a fault)."""
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            for f in (proc / "fdinfo").iterdir():
                if f"iff:\t{dev}\n" in f.read_text():
                    pids.append(int(proc.name))
                    break
        except OSError:
            continue
    return pids


def _describe(pid: int) -> str:
    try:
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()[:200]
        return cmd + " | " + Path(f"/proc/{pid}/stat").read_text()[:80]
    except OSError:
        return "gone"


def _gone(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True
    return state in ("Z", "X")


def _assert_consistent(lab: Lab, name: str, tap: str, before: dict[str, object],
                       pids: list[int]) -> str:
    """After a fault: a named state; destroy (if needed) ends it; nothing is left: no
    process, no fd on the device, no socket or temp file; the device is unchanged; the
    next start works. Returns the state seen right after the fault."""
    seen = ""
    for _ in range(100):  # a killed launcher's supervisor may still be finishing
        res = lab.tv("domstate", name, "--reason", "--json", check=False)
        seen = json.loads(res.stdout)["state"]
        if seen in ("shut off", "running", "paused"):
            break
        time.sleep(0.05)
    assert seen in ("shut off", "running", "paused"), res.stdout + res.stderr
    if seen != "shut off":
        assert json.loads(lab.tv("destroy", name, "--json").stdout)["state"] == "shut off"
    assert lab.tv_json("domstate", name)["state"] == "shut off"
    assert wait_until(lambda: all(_gone(p) for p in pids), 10), [
        (p, _describe(p)) for p in pids if not _gone(p)]
    assert wait_until(lambda: not _tap_holders(tap), 10), [
        (p, _describe(p)) for p in _tap_holders(tap)]
    assert lab.snapshot(tap) == before
    left = set(_runtime_files(lab, name)) - RUNTIME_FILES
    assert not left, left
    assert lab.tv("list", "--all", "--json", check=False).returncode == 0
    lab.tv("start", name, "--paused")
    lab.tv("destroy", name)
    return seen


def _pid_from_log(log: Path, label: str, offset: int) -> int | None:
    """The supervisor's pid once its log shows `label` (TAPVIRT_TRACE) after `offset`
    (the log appends across runs)."""
    import re

    try:
        text = log.read_bytes()[offset:].decode(errors="replace")
    except OSError:
        return None
    pids = re.findall(rf"supervisor\[(\d+)\]: tapvirt-trace \S+ supervisor {label}", text)
    return int(pids[-1]) if pids else None


LAUNCHER_PHASES = ["start", "supervisor spawned", "definition loaded", "connected, argv built",
                   "job sent"]
SUPERVISOR_PHASES = ["job received", "qemu spawned", "qmp answered", "cont done"]


@pytest.fixture(scope="module")
def victim(lab: Lab) -> tuple[str, str, dict[str, object]]:
    name = "tv-kill"
    tap = lab.tap()
    lab.define(name, lab.domain_xml(name, _iface("52:54:00:13:0f:01", tap),
                                    lab.image.cmdline(ip="10.213.0.97/24")))
    return name, tap, lab.snapshot(tap)


def _start_traced(lab: Lab, name: str) -> subprocess.Popen[str]:
    lab.as_user.env["TAPVIRT_TRACE"] = "1"
    try:
        argv = lab.as_user.argv([unprivileged_python(), "-m", "tapvirt.cli.main", "start",
                                 name, "--paused", "--tun-node", str(lab.tun)])
    finally:
        del lab.as_user.env["TAPVIRT_TRACE"]
    return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.mark.parametrize("phase", LAUNCHER_PHASES)
def test_sigkill_launcher_at_each_phase(lab: Lab, victim: tuple[str, str, dict[str, object]],
                                        phase: str) -> None:
    name, tap, before = victim
    start = _start_traced(lab, name)
    assert start.stderr is not None
    for line in start.stderr:
        if line.rstrip().endswith(f"launcher {phase}"):
            start.kill()
            break
    start.wait(30)
    st_file = lab.rundir(name) / "state.json"
    pids = [start.pid]
    if st_file.exists():
        with contextlib.suppress(ValueError):
            st = json.loads(st_file.read_text())
            pids += [p for p in (st.get("supervisor_pid"), st.get("qemu_pid")) if p]
    _assert_consistent(lab, name, tap, before, pids)


@pytest.mark.parametrize("who", ["supervisor", "qemu"])
@pytest.mark.parametrize("phase", SUPERVISOR_PHASES)
def test_sigkill_supervisor_or_qemu_at_each_phase(
        lab: Lab, victim: tuple[str, str, dict[str, object]], who: str, phase: str) -> None:
    name, tap, before = victim
    if who == "qemu" and phase == "job received":
        pytest.skip("no QEMU exists before the supervisor spawns it")
    log = lab.rundir(name) / "supervisor.log"
    offset = log.stat().st_size if log.exists() else 0
    start = _start_traced(lab, name)
    assert wait_until(lambda: _pid_from_log(log, phase, offset) is not None, 30, 0.002), \
        log.read_text(errors="replace")[-2000:]
    sup = _pid_from_log(log, phase, offset)
    assert sup is not None
    pids = [sup]
    if who == "supervisor":
        os.kill(sup, signal.SIGKILL)
    else:
        def qemu_pid() -> int | None:
            with contextlib.suppress(OSError, ValueError):
                pid = json.loads((lab.rundir(name) / "state.json").read_text()).get("qemu_pid")
                return int(pid) if pid else None
            return None

        assert wait_until(lambda: qemu_pid() is not None, 10, 0.002)
        qemu = qemu_pid()
        assert qemu is not None
        pids.append(qemu)
        os.kill(qemu, signal.SIGKILL)
    _, err = start.communicate(timeout=60)
    if start.returncode != 0:  # the start failed by name, never a traceback
        assert "error[" in err and "Traceback" not in err, err
    _assert_consistent(lab, name, tap, before, pids)


# -- unwritable runtime and config directories (EACCES, as the unprivileged user) --------

def test_unwritable_runtime_dir(lab: Lab, victim: tuple[str, str, dict[str, object]]) -> None:
    name, tap, before = victim
    lab.tv("start", name, "--paused")
    lab.tv("destroy", name)
    d = lab.rundir(name)
    d.chmod(0o500)  # still private, but not writable by its owner
    try:
        res = lab.tv("start", name, "--paused", "--json", check=False)
        assert res.returncode == 1
        err = json.loads(res.stdout)["error"]
        assert err["code"] == "runtime-dir-unwritable", err
        assert str(d) in err["subject"] and err["fix"]
        assert lab.tv_json("list", "--all")["domains"]
        assert lab.tv_json("domstate", name)["state"] == "shut off"
    finally:
        d.chmod(0o700)
    _assert_consistent(lab, name, tap, before, [])


@pytest.mark.parametrize("mode", [0o500, 0o000])
def test_unreadable_or_unwritable_config_dir(lab: Lab, mode: int,
                                             victim: tuple[str, str, dict[str, object]]
                                             ) -> None:
    name, tap, before = victim
    domains = lab.user.home / ".config" / "tapvirt" / "domains"
    assert domains.is_dir()
    xml = lab.scratch / f"{name}.xml"
    domains.chmod(mode)
    try:
        res = lab.tv("define", str(xml), "--json", check=False)
        assert res.returncode == 1, res.stdout
        assert json.loads(res.stdout)["error"]["code"] == "store-unusable", res.stdout
        res = lab.tv("start", name, "--paused", "--json", check=False)
        if mode == 0o500:  # readable: the start works
            assert res.returncode == 0, res.stdout + res.stderr
            lab.tv("destroy", name)
        else:
            assert res.returncode == 1, res.stdout
            err = json.loads(res.stdout)["error"]
            assert err["code"] == "store-unusable", err
            assert str(domains) in err["subject"]
        res = lab.tv("list", "--all", "--json", check=False)
        assert res.returncode in (0, 1) and "Traceback" not in res.stderr
        if res.returncode:
            assert json.loads(res.stdout)["error"]["code"] == "store-unusable"
    finally:
        domains.chmod(0o700)
    _assert_consistent(lab, name, tap, before, [])


# -- SIGKILL during shutdown (a booted guest: it must answer the ACPI power button) -------

MARKER = r"TV-MARKER up=\S+ ip=(\S+) mac=(\S+)"


@pytest.mark.parametrize("who", ["launcher", "supervisor", "qemu"])
def test_sigkill_during_shutdown(lab: Lab, victim: tuple[str, str, dict[str, object]],
                                 who: str) -> None:
    """`shutdown` is waiting for the power-off when the shutdown command itself, the
    supervisor or QEMU is killed: the guest still ends shut off, nothing is left."""
    name, tap, before = victim
    lab.tv("start", name)
    lab.wait_console(name, MARKER, timeout=180)
    st = lab.state(name)
    shut = subprocess.Popen(
        lab.as_user.argv([unprivileged_python(), "-m", "tapvirt.cli.main", "shutdown", name,
                          "--timeout", "60", "--json"]),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    # the guest saw the power button (shutdown is now waiting for the power-off)
    wait_until(lambda: "TV-POWERDOWN" in lab.console(name) or shut.poll() is not None,
               30, 0.001)
    victim_pid = {"launcher": shut.pid, "supervisor": st["supervisor_pid"],
                  "qemu": st["qemu_pid"]}[who]
    with contextlib.suppress(ProcessLookupError):
        os.kill(victim_pid, signal.SIGKILL)
    _, err = shut.communicate(timeout=90)
    assert "Traceback" not in err, err
    assert wait_until(lambda: json.loads(lab.tv("domstate", name, "--json").stdout)["state"]
                      == "shut off", 60), lab.tv("domstate", name, "--reason").stdout
    _assert_consistent(lab, name, tap, before, [st["supervisor_pid"], st["qemu_pid"]])
