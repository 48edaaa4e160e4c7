"""Guests without a supervisor (tapvirt.domains.direct) against a real QEMU: -S, then
cont, no guest OS. The state comes from the process table and QEMU's own events log."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tapvirt.conf.model import LifecycleAction
from tapvirt.domains import api, direct, live, runtime
from tapvirt.domains.runtime import PAUSED, RUNNING, SHUTOFF, STARTING, DomainDir, State
from tapvirt.errors import TapvirtError
from tapvirt.qemu.process import pid_alive
from tapvirt.qemu.qmp import QmpClient
from tests.support.reaper import (  # reap_module_orphans: an autouse fixture
    reap_module_orphans,  # noqa: F401
    reap_orphans,
)

QEMU = shutil.which("qemu-system-x86_64")
needs_qemu = pytest.mark.skipif(QEMU is None, reason="qemu-system-x86_64 is not installed")


@pytest.fixture
def dd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[DomainDir]:
    xdg = tmp_path / "xdg"
    xdg.mkdir(mode=0o700)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(xdg))
    d = DomainDir(runtime.runtime_root(), "dir1").ensure()
    try:
        yield d
    finally:
        st = d.read() if d.state_file.exists() else State(d.name)
        if st.qemu_pid and pid_alive(st.qemu_pid):
            os.kill(st.qemu_pid, signal.SIGKILL)
        reap_orphans()


def _argv(dd: DomainDir) -> list[str]:
    assert QEMU is not None
    return [QEMU, "-accel", "tcg", "-m", "32", "-nodefaults", "-display", "none", "-S",
            "-qmp", f"unix:{dd.qmp_socket},server=on,wait=off"]


def _launch(dd: DomainDir, *, paused: bool = False, argv: list[str] | None = None) -> State:
    st = State(dd.name, "00000000-0000-0000-0000-0000000000d1", STARTING,
               launcher_pid=os.getpid(), started_at=time.time())
    direct.launch(dd, st, argv or _argv(dd), [], qmp_before_cont=[], private_sockets=[],
                  paused=paused, timeout=20)
    return dd.read()


def _wait(pred: Any, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(0.01)
    raise AssertionError("condition not met in time")


def _events(dd: DomainDir, lines: list[dict[str, Any]]) -> None:
    greeting: dict[str, Any] = {"QMP": {"version": {}, "capabilities": []}}
    dd.events_log.write_text("".join(json.dumps(x) + "\r\n"
                                     for x in [greeting, {"return": {}}, *lines]))


# -- which guests run direct -----------------------------------------------------------

def _dom(**over: Any) -> Any:
    from tapvirt.conf.parse import parse_domain

    xml = ("<domain type='qemu'><name>d</name><memory>65536</memory>"
           "<os><type>hvm</type></os>"
           + "".join(f"<{k}>{v}</{k}>" for k, v in over.items()) + "</domain>")
    return parse_domain(xml)


def test_mode_defaults_to_always_and_refuses_other_values(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(direct.SETTING, raising=False)
    assert direct.mode() == "always"
    assert direct.why_supervised(_dom(), to_delete=[], tpm=None) == "TAPVIRT_SUPERVISOR=always"
    monkeypatch.setenv(direct.SETTING, "never")
    with pytest.raises(TapvirtError) as err:
        direct.mode()
    assert err.value.code.code == "supervisor-setting-invalid"
    assert "'never'" in err.value.cause and "TAPVIRT_SUPERVISOR=auto" in err.value.fix


def test_auto_keeps_a_supervisor_only_where_something_needs_one(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(direct.SETTING, "auto")
    assert direct.why_supervised(_dom(), to_delete=[], tpm=None) is None
    for quiet in ({"on_reboot": "destroy"}, {"on_poweroff": "preserve"},
                  {"on_crash": "rename-restart"}):  # QEMU's own exit does those
        assert direct.why_supervised(_dom(**quiet), to_delete=[], tpm=None) is None
    restart = direct.why_supervised(_dom(on_poweroff="restart"), to_delete=[], tpm=None)
    assert restart == "<on_poweroff>restart</on_poweroff>"
    crash = direct.why_supervised(_dom(on_crash="restart"), to_delete=[], tpm=None)
    assert crash == "<on_crash>restart</on_crash>"
    assert _dom(on_crash="restart").on_crash is LifecycleAction.RESTART
    assert "swtpm" in (direct.why_supervised(_dom(), to_delete=[], tpm={"x": 1}) or "")
    managed = direct.why_supervised(_dom(), to_delete=["macvtap7"], tpm=None)
    assert managed is not None and "macvtap7" in managed


# -- the reason of an end, from QEMU's events --------------------------------------------

@pytest.mark.parametrize(("reason", "shown"), [
    ("guest-shutdown", "shutdown"), ("guest-reset", "shutdown"),
    ("host-signal", "destroyed"), ("host-qmp-quit", "destroyed"),
    ("guest-panic", "crashed"), ("host-error", "crashed"),
])
def test_exit_reason_is_the_last_shutdown_event(dd: DomainDir, reason: str,
                                                shown: str) -> None:
    _events(dd, [{"event": "RESUME"},
                 {"event": "SHUTDOWN", "data": {"guest": True, "reason": reason}}])
    assert direct.exit_reason(dd) == shown


def test_exit_without_shutdown_event_or_after_a_fake_reboot_is_a_crash(
        dd: DomainDir) -> None:
    _events(dd, [{"event": "RESUME"}])
    assert direct.exit_reason(dd) == "crashed"
    _events(dd, [{"event": "SHUTDOWN", "data": {"reason": "guest-shutdown"}},
                 {"event": "STOP"}, {"event": "RESET"}, {"event": "RESUME"}])
    assert direct.exit_reason(dd) == "crashed"
    dd.events_log.unlink()
    assert direct.exit_reason(dd) == "crashed"


def test_read_events_takes_complete_lines_only(dd: DomainDir) -> None:
    _events(dd, [{"event": "STOP"}])
    with open(dd.events_log, "ab") as f:
        f.write(b'{"event": "RES')  # QEMU is still writing it
    events, end = direct.read_events(dd, 0)
    assert [e["event"] for e in events] == ["STOP"]
    assert end == len(dd.events_log.read_bytes()) - len(b'{"event": "RES')
    assert direct.read_events(dd, end) == ([], end)


# -- real QEMU -------------------------------------------------------------------------------

@needs_qemu
def test_launch_runs_qemu_detached_and_records_it(dd: DomainDir) -> None:
    st = _launch(dd)
    assert st.state == RUNNING and st.direct and st.supervisor_pid is None
    assert st.qemu_pid and st.qemu_start
    assert os.getsid(st.qemu_pid) == st.qemu_pid  # a session of its own
    assert dd.qmp_socket.stat().st_mode & 0o777 == 0o600
    assert not dd.supervisor_locked()
    # QEMU logs its own events: the greeting and the negotiation are there already
    assert b'"return": {}' in dd.events_log.read_bytes()
    assert api.reconcile(dd).state == RUNNING
    with QmpClient.connect(str(dd.qmp_socket)) as qmp:
        assert qmp.status() == "running"


@needs_qemu
def test_state_follows_qemus_events_at_the_next_command(dd: DomainDir) -> None:
    _launch(dd)
    with QmpClient.connect(str(dd.qmp_socket)) as qmp:
        qmp.execute("stop")  # e.g. `qemu-monitor-command NAME stop`: no verb knew
    _wait(lambda: b'"STOP"' in dd.events_log.read_bytes(), 5)
    st = api.reconcile(dd)
    assert (st.state, st.reason) == (PAUSED, "unknown")
    assert dd.read().state == PAUSED  # recorded, and the events consumed
    assert dd.read().events_offset == len(dd.events_log.read_bytes())
    with QmpClient.connect(str(dd.qmp_socket)) as qmp:
        qmp.execute("cont")
    _wait(lambda: b'"RESUME"' in dd.events_log.read_bytes()[dd.read().events_offset:], 5)
    assert api.reconcile(dd).state == RUNNING


@needs_qemu
def test_verbs_change_the_guest_without_a_supervisor(dd: DomainDir) -> None:
    _launch(dd)
    assert live.suspend(dd.name).state == PAUSED
    with QmpClient.connect(str(dd.qmp_socket)) as qmp:
        assert qmp.status() == "paused"
    st = api.reconcile(dd)  # the STOP the suspend caused does not change its reason
    assert (st.state, st.reason) == (PAUSED, "user")
    assert live.resume(dd.name).state == RUNNING
    assert live.qmp_read(dd.name, "query-status")["status"] == "running"
    assert "started without a supervisor" in dd.supervisor_log.read_text()


@needs_qemu
def test_paused_start(dd: DomainDir) -> None:
    st = _launch(dd, paused=True)
    assert (st.state, st.reason) == (PAUSED, "started paused")
    with QmpClient.connect(str(dd.qmp_socket)) as qmp:
        assert qmp.status() == "prelaunch"
    assert api.resume(dd.name).state == RUNNING


@needs_qemu
def test_an_end_is_found_and_named_by_the_next_command(dd: DomainDir) -> None:
    st = _launch(dd)
    os.kill(st.qemu_pid or 0, signal.SIGKILL)
    _wait(lambda: not pid_alive(st.qemu_pid or 0), 5)
    final = api.reconcile(dd)
    assert (final.state, final.reason) == (SHUTOFF, "crashed")
    assert final.qemu_pid is None and not dd.qmp_socket.exists()
    st = _launch(dd)
    with QmpClient.connect(str(dd.qmp_socket)) as qmp:
        qmp.execute("quit")
    _wait(lambda: not pid_alive(st.qemu_pid or 0), 5)
    assert api.reconcile(dd).reason == "destroyed"


@needs_qemu
def test_destroy_and_shutdown_timeout(dd: DomainDir, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(api, "_store", _NoStore)
    st = _launch(dd)
    final = api.destroy(dd.name)
    assert (final.state, final.reason) == (SHUTOFF, "destroyed")
    assert not pid_alive(st.qemu_pid or 0)
    _launch(dd)  # nothing answers the power button: destroyed after the timeout
    final = api.shutdown(dd.name, timeout=1)
    assert final.state == SHUTOFF and "destroyed" in final.reason


class _NoStore:
    def exists(self, name: str) -> bool:
        return False


@needs_qemu
def test_failing_qemu_is_reported_and_gone(dd: DomainDir) -> None:
    assert QEMU is not None
    st = State(dd.name, state=STARTING)
    with pytest.raises(TapvirtError) as err:
        direct.launch(dd, st, [QEMU, "-no-such-option"], [], qmp_before_cont=[],
                      private_sockets=[], paused=False, timeout=20)
    assert err.value.code.code == "qemu-failed" and "no-such-option" in err.value.cause
    assert not pid_alive(st.qemu_pid or 0)


@needs_qemu
def test_the_guest_outlives_its_launcher(dd: DomainDir) -> None:
    """The launcher is a process that exits (or is killed) after the start: QEMU,
    nobody's child then, keeps running and the next command sees it running."""
    code = (
        "import os, sys, time\n"
        "from pathlib import Path\n"
        "from tapvirt.domains import direct, runtime\n"
        "dd = runtime.DomainDir(Path(sys.argv[1]), sys.argv[2])\n"
        "st = runtime.State(dd.name, state=runtime.STARTING, launcher_pid=os.getpid())\n"
        "direct.launch(dd, st, sys.argv[3:], [], qmp_before_cont=[], private_sockets=[],\n"
        "              paused=False, timeout=20)\n"
        "os.kill(os.getpid(), 9)\n"
    )
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    proc = subprocess.run([sys.executable, "-c", code, str(dd.root), dd.name, *_argv(dd)],
                          env=env, timeout=60, check=False)
    assert proc.returncode == -signal.SIGKILL
    st = api.reconcile(dd)
    assert st.state == RUNNING and st.qemu_pid and pid_alive(st.qemu_pid)
    with QmpClient.connect(str(dd.qmp_socket)) as qmp:
        assert qmp.status() == "running"


def test_domxml_to_native_names_the_events_monitor_start_adds(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from tapvirt.cli.net_cmds import _events_monitor

    monkeypatch.setenv("TAPVIRT_RUNTIME_DIR", str(tmp_path))
    monkeypatch.setenv(direct.SETTING, "auto")
    note = _events_monitor(_dom(), str(tmp_path / "d" / "qmp.sock"))
    assert note.startswith(f"-chardev pipe,id=charevents,path={tmp_path}/d/events -mon ")
    assert "no supervisor" in note
    note = _events_monitor(_dom(on_crash="restart"), str(tmp_path / "d" / "qmp.sock"))
    assert f"path={tmp_path}/d/qmp.sock.ev" in note
    assert "with a supervisor: <on_crash>restart</on_crash>" in note
