"""A damaged or foreign state file is its own condition, and liveness never depends on it.

The state file is a record; whether a guest's supervisor lives is known from the lock it
holds (`NAME/supervisor.lock`), and a pid is only ever "ours" with a matching start time.
These run the real supervisor against a real QEMU (no guest OS: -S, then cont).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tapvirt.cli.main import main
from tapvirt.domains import api, runtime
from tapvirt.domains import errors as codes
from tapvirt.domains.runtime import RUNNING, SHUTOFF, DomainDir, State
from tapvirt.errors import TapvirtError
from tapvirt.qemu.process import pid_alive, proc_starttime
from tests.support.reaper import reap_module_orphans  # noqa: F401 (autouse fixture)

QEMU = shutil.which("qemu-system-x86_64")

XML = """<domain type='qemu'><name>{name}</name><memory unit='MiB'>32</memory>
<os><type arch='x86_64' machine='pc'>hvm</type></os><devices>
<emulator>{qemu}</emulator>
</devices></domain>"""

# every way a state file can be damaged or not ours
DAMAGED = [
    b"",  # truncated to nothing
    b'{"name": "g1", "state": "run',  # torn
    b"[]", b"null", b'"running"', b"42",  # JSON, but not an object
    b"{}",  # no name
    b'{"name": "other", "state": "running"}',  # another domain's
    b'{"name": "g1", "state": "sleeping"}',  # a state we do not know
    b'{"name": "g1", "state": "running", "supervisor_pid": "12"}',  # wrong type
    b'{"name": "g1", "state": "running", "interfaces": [1]}',
    b'{"name": "g1", "state": "running", "version": 99}',  # a newer, incompatible layout
    b"\xff\xfe garbage",
]


@pytest.fixture
def dirs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    xdg = tmp_path / "run"
    xdg.mkdir(mode=0o700)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(xdg))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "cfg"))
    monkeypatch.delenv("TAPVIRT_RUNTIME_DIR", raising=False)
    return tmp_path


def _define(dirs: Path, name: str) -> None:
    from tapvirt.domains.store import Store

    Store().define(XML.format(name=name, qemu=QEMU or "/usr/bin/qemu-system-x86_64"))


def _damage(dd: DomainDir, data: bytes) -> None:
    dd.state_file.write_bytes(data)


@pytest.mark.parametrize("text", DAMAGED)
def test_damaged_state_is_its_own_condition(dirs: Path, text: bytes,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    _define(dirs, "g1")
    _define(dirs, "g2")
    root = runtime.runtime_root()
    dd = DomainDir(root, "g1").ensure()
    _damage(dd, text)
    DomainDir(root, "g2").ensure().write(State("g2"))
    with pytest.raises(TapvirtError) as info:
        dd.read()
    assert info.value.code is codes.STATE_UNREADABLE
    assert str(dd.state_file) in info.value.subject
    # start refuses: it cannot know whether the guest runs from the record alone...
    with pytest.raises(TapvirtError) as info:
        api.start("g1")
    assert info.value.code is codes.STATE_UNREADABLE
    assert "tapvirt destroy g1" in info.value.fix
    # ...and the file is left as it was, for a human to look at
    assert dd.state_file.read_bytes() == text
    # list still works and shows the others (and the damaged one as unknown)
    rows = {r.name: r.state for r in api.list_domains(include_inactive=True)}
    assert rows == {"g1": "unknown", "g2": SHUTOFF}
    assert main(["list", "--all", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert {d["name"]: d["state"] for d in out["domains"]} == rows
    assert main(["domstate", "g1"]) == 1
    assert "error[state-unreadable]" in capsys.readouterr().err
    # nothing runs: destroy is the documented way to reset it, then start works again
    st = api.destroy("g1")
    assert st.state == SHUTOFF and "unreadable" in st.reason
    assert dd.read().state == SHUTOFF


def test_state_file_that_is_not_a_regular_file(dirs: Path) -> None:
    dd = DomainDir(runtime.runtime_root(), "g1").ensure()
    os.mkfifo(dd.state_file)  # a reader must never block on it
    with pytest.raises(TapvirtError) as info:
        dd.read()
    assert info.value.code is codes.STATE_UNREADABLE


def test_huge_state_file(dirs: Path) -> None:
    dd = DomainDir(runtime.runtime_root(), "g1").ensure()
    dd.state_file.write_text('{"name": "g1", "x": "' + "a" * (2 << 20) + '"}')
    with pytest.raises(TapvirtError) as info:
        dd.read()
    assert info.value.code is codes.STATE_UNREADABLE


def test_a_pid_without_start_time_is_not_ours(dirs: Path) -> None:
    """An unrelated process whose pid a foreign or old record names is never signalled."""
    from tapvirt.domains.api import reconcile

    dd = DomainDir(runtime.runtime_root(), "g1").ensure()
    sleeper = subprocess.Popen(["sleep", "30"])
    try:
        for rec in ({"supervisor_pid": sleeper.pid}, {"qemu_pid": sleeper.pid},
                    {"supervisor_pid": sleeper.pid, "qemu_pid": sleeper.pid,
                     "qemu_start": 1}):
            dd.write(State("g1", state=RUNNING, **rec))  # type: ignore[arg-type]
            assert reconcile(dd).state == SHUTOFF
            dd.write(State("g1", state=RUNNING, **rec))  # type: ignore[arg-type]
            with pytest.raises(TapvirtError) as info:
                api.destroy("g1")
            assert info.value.code is codes.DOMAIN_NOT_RUNNING
            assert pid_alive(sleeper.pid)
    finally:
        sleeper.kill()
        sleeper.wait()


@pytest.mark.skipif(QEMU is None, reason="qemu-system-x86_64 is not installed")
@pytest.mark.parametrize("text", [b"", b"[]", b'{"name": "g1", "state": "shut off"}'])
def test_running_guest_with_a_damaged_state(dirs: Path, text: bytes) -> None:
    """The supervisor's lock says it runs, whatever the file says: no second QEMU; destroy
    finds the supervisor through the lock and the supervisor rewrites a true state."""
    _define(dirs, "g1")
    st = api.start("g1", paused=True)
    dd = DomainDir(runtime.runtime_root(), "g1")
    sup, qemu = st.supervisor_pid, st.qemu_pid
    assert sup and qemu and pid_alive(qemu)
    try:
        _damage(dd, text)
        with pytest.raises(TapvirtError) as info:
            api.start("g1")
        assert info.value.code in (codes.STATE_UNREADABLE, codes.DOMAIN_RUNNING)
        assert "running" in info.value.cause
        rows = {r.name: r for r in api.list_domains()}
        assert rows["g1"].state in ("unknown", RUNNING)
        st = api.destroy("g1")
        assert st.state == SHUTOFF and st.reason == "destroyed"
        assert not pid_alive(qemu) and not pid_alive(sup)
        assert dd.read().state == SHUTOFF
        assert api.start("g1", paused=True).state != SHUTOFF
        api.destroy("g1")
    finally:
        for pid in (sup, qemu):
            if pid_alive(pid):
                os.kill(pid, signal.SIGKILL)


@pytest.mark.skipif(QEMU is None, reason="qemu-system-x86_64 is not installed")
def test_killed_supervisor_with_a_damaged_state_keeps_qemu_visible(dirs: Path) -> None:
    """QEMU outlived its supervisor and the record is gone: QEMU still answers on its QMP
    socket, so start refuses and destroy stops it through QMP."""
    _define(dirs, "g1")
    st = api.start("g1", paused=True)
    dd = DomainDir(runtime.runtime_root(), "g1")
    sup, qemu = st.supervisor_pid or 0, st.qemu_pid or 0
    qemu_start = proc_starttime(qemu)
    try:
        os.kill(sup, signal.SIGKILL)
        deadline = time.monotonic() + 5
        while pid_alive(sup) and time.monotonic() < deadline:
            time.sleep(0.01)
        _damage(dd, b"")
        with pytest.raises(TapvirtError) as info:
            api.start("g1")
        assert info.value.code is codes.STATE_UNREADABLE
        assert "QMP" in info.value.cause
        api.destroy("g1")
        deadline = time.monotonic() + 10
        while pid_alive(qemu) and proc_starttime(qemu) == qemu_start \
                and time.monotonic() < deadline:
            time.sleep(0.02)
        assert not pid_alive(qemu)
        assert dd.read().state == SHUTOFF
    finally:
        for pid in (sup, qemu):
            if pid_alive(pid):
                os.kill(pid, signal.SIGKILL)
