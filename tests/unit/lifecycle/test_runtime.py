"""Runtime directory, state files, locks and reconciliation of stale state."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tapvirt.domains import errors as codes
from tapvirt.domains import runtime
from tapvirt.domains.runtime import RUNNING, SHUTOFF, STARTING, DomainDir, State
from tapvirt.errors import TapvirtError


@pytest.fixture
def xdg(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    d = tmp_path / "xdg"
    d.mkdir(mode=0o700)
    monkeypatch.delenv("TAPVIRT_RUNTIME_DIR", raising=False)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(d))
    return d


def test_root_is_created_private(xdg: Path) -> None:
    root = runtime.runtime_root()
    assert root == xdg / "tapvirt"
    assert root.stat().st_mode & 0o777 == 0o700
    dd = DomainDir(root, "g1").ensure()
    assert dd.path.stat().st_mode & 0o777 == 0o700


def test_fallback_without_xdg(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("XDG_RUNTIME_DIR", raising=False)
    monkeypatch.delenv("TAPVIRT_RUNTIME_DIR", raising=False)
    existed = Path(f"/tmp/tapvirt-{os.getuid()}").exists()
    root = runtime.runtime_root()
    assert root == Path(f"/tmp/tapvirt-{os.getuid()}")
    assert root.stat().st_uid == os.getuid() and root.stat().st_mode & 0o077 == 0
    if not existed:
        root.rmdir()


def test_open_directory_is_refused(xdg: Path) -> None:
    (xdg / "tapvirt").mkdir(mode=0o755)
    os.chmod(xdg / "tapvirt", 0o755)
    with pytest.raises(TapvirtError) as info:
        runtime.runtime_root()
    assert info.value.code is codes.RUNTIME_DIR_UNSAFE
    assert "chmod 700" in info.value.fix


def test_symlink_is_refused(xdg: Path, tmp_path: Path) -> None:
    target = tmp_path / "elsewhere"
    target.mkdir(mode=0o700)
    (xdg / "tapvirt").symlink_to(target)
    with pytest.raises(TapvirtError) as info:
        runtime.runtime_root()
    assert info.value.code is codes.RUNTIME_DIR_UNSAFE


def test_state_roundtrip_and_atomic_files(xdg: Path) -> None:
    dd = DomainDir(runtime.runtime_root(), "g1").ensure()
    assert dd.read().state == SHUTOFF  # no file yet
    st = State("g1", "u-1", RUNNING, interfaces=[runtime.IfaceState("net0", "ethernet",
                                                                     "tap0", "virtio", "m")])
    dd.write(st)
    assert dd.read() == st
    assert dd.state_file.stat().st_mode & 0o777 == 0o600
    assert [p.name for p in dd.path.iterdir()] == ["state.json"]  # no temp files left
    data = json.loads(dd.state_file.read_text())
    data["future_field"] = 1  # newer versions may add keys
    dd.state_file.write_text(json.dumps(data))
    assert dd.read().state == RUNNING
    dd.state_file.write_text("{torn")
    with pytest.raises(TapvirtError) as info:  # never taken for "shut off"
        dd.read()
    assert info.value.code is codes.STATE_UNREADABLE


def test_long_names_get_a_short_qmp_socket(xdg: Path) -> None:
    dd = DomainDir(runtime.runtime_root(), "x" * 64)
    assert len(str(dd.qmp_socket).encode()) <= 100


def test_lock_excludes_a_second_holder(xdg: Path) -> None:
    dd = DomainDir(runtime.runtime_root(), "g1").ensure()
    code = ("import sys; from pathlib import Path; from tapvirt.domains.runtime import DomainDir\n"
            "from tapvirt.errors import TapvirtError\n"
            f"dd = DomainDir(Path({str(dd.root)!r}), 'g1')\n"
            "try:\n    with dd.locked(): print('got')\n"
            "except TapvirtError as e: print(e.code.code)\n")
    with dd.locked():
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                             env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
                             check=True).stdout.strip()
        assert out == "domain-busy"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
                         check=True).stdout.strip()
    assert out == "got"


def _dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def test_reconcile_repairs_dead_supervisor_and_qemu(xdg: Path) -> None:
    from tapvirt.domains.api import reconcile

    dd = DomainDir(runtime.runtime_root(), "g1").ensure()
    dead = _dead_pid()
    dd.qmp_socket.write_text("")  # a stale socket file
    dd.write(State("g1", state=RUNNING, supervisor_pid=dead, qemu_pid=dead))
    st = reconcile(dd)
    assert st.state == SHUTOFF and "stale" in st.reason
    assert dd.read().state == SHUTOFF
    assert not dd.qmp_socket.exists()


def test_reconcile_repairs_a_launcher_killed_mid_start(xdg: Path) -> None:
    from tapvirt.domains.api import reconcile

    dd = DomainDir(runtime.runtime_root(), "g1").ensure()
    dd.write(State("g1", state=STARTING, launcher_pid=_dead_pid()))
    assert reconcile(dd).state == SHUTOFF


def test_reconcile_keeps_a_live_supervisor(xdg: Path) -> None:
    """Liveness is the supervisor's lock: a holder keeps the guest running whatever pid
    the record names; a live process with the recorded pid and start time but no lock is
    not a supervisor (pids are reused)."""
    from tapvirt.domains.api import reconcile
    from tapvirt.qemu.process import proc_starttime

    dd = DomainDir(runtime.runtime_root(), "g1").ensure()
    code = ("import sys, time; from pathlib import Path\n"
            "from tapvirt.domains.runtime import DomainDir\n"
            f"fd = DomainDir(Path({str(dd.root)!r}), 'g1').hold_supervisor_lock()\n"
            "print('held', flush=True); time.sleep(30)\n")
    holder = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True,
                              env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    sleeper = subprocess.Popen(["sleep", "30"])
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        dd.write(State("g1", state=RUNNING, supervisor_pid=1, supervisor_start=1))
        assert reconcile(dd).state == RUNNING
        assert dd.supervisor_holder() == holder.pid
        holder.kill()
        holder.wait()
        assert dd.supervisor_holder() is None
        dd.write(State("g1", state=RUNNING, supervisor_pid=sleeper.pid,
                       supervisor_start=proc_starttime(sleeper.pid)))
        assert reconcile(dd).state == SHUTOFF
    finally:
        for p in (holder, sleeper):
            p.kill()
            p.wait()


def test_a_killed_writers_temp_goes_even_before_it_is_reaped(tmp_path: Path) -> None:
    # a writer SIGKILLed between create and rename, not reaped yet (a zombie, as under a
    # subreaper), and a live one: only the live writer's temp file stays
    dd = DomainDir(tmp_path, "g").ensure()
    zombie = os.fork()
    if zombie == 0:
        os._exit(0)
    try:
        deadline = time.monotonic() + 10
        while Path(f"/proc/{zombie}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z":
            assert time.monotonic() < deadline, "the child did not end"
            time.sleep(0.01)
        dead = dd.path / f".state.json.{zombie}.1"
        alive = dd.path / f".state.json.{os.getpid()}.2"
        dead.write_text("{")
        alive.write_text("{")
        dd.remove_stale_temps()
        assert not dead.exists() and alive.exists()
    finally:
        os.waitpid(zombie, 0)
