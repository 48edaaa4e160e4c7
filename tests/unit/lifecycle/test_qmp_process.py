"""The QMP client and the QEMU process helpers against a real QEMU (no guest, -S)."""

from __future__ import annotations

import os
import shutil
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tapvirt.domains import errors as codes
from tapvirt.errors import TapvirtError
from tapvirt.qemu import process
from tapvirt.qemu.qmp import QmpClient

QEMU = shutil.which("qemu-system-x86_64")
pytestmark = pytest.mark.skipif(QEMU is None, reason="qemu-system-x86_64 is not installed")


def _argv(qmp: Path, *extra: str) -> list[str]:
    assert QEMU is not None
    return [QEMU, "-accel", "tcg", "-m", "64", "-nodefaults", "-no-user-config",
            "-display", "none", "-S", "-qmp", f"unix:{qmp},server=on,wait=off", *extra]


@pytest.fixture
def qemu(tmp_path: Path) -> Iterator[tuple[process.Process, QmpClient, Path]]:
    qmp = tmp_path / "qmp.sock"
    log = tmp_path / "qemu.log"
    proc = process.spawn(_argv(qmp), pass_fds=(), log_path=str(log))
    try:
        client = process.wait_for_qmp(proc, str(qmp), log_path=str(log), timeout=20)
        try:
            yield proc, client, log
        finally:
            client.close()
    finally:
        process.stop(proc)


def test_greeting_status_and_cont(
    qemu: tuple[process.Process, QmpClient, Path],
) -> None:
    _, client, _ = qemu
    assert client.greeting["version"]["qemu"]["major"] >= 7
    assert client.status() == "prelaunch"
    client.execute("cont")
    assert client.status() == "running"
    assert client.wait_event("RESUME", 5) is not None


def test_qmp_error_is_a_tapvirt_error(
    qemu: tuple[process.Process, QmpClient, Path],
) -> None:
    _, client, _ = qemu
    with pytest.raises(TapvirtError) as info:
        client.execute("no-such-command")
    assert info.value.code is codes.QMP_COMMAND_FAILED
    assert "CommandNotFound" in info.value.cause
    with pytest.raises(TapvirtError) as info:
        client.execute("getfd", {"fdname": "x"})  # no fd attached
    assert "SCM_RIGHTS" in info.value.cause
    assert client.status() == "prelaunch"  # the session survives errors


def test_fd_passing_getfd_then_netdev_add(
    qemu: tuple[process.Process, QmpClient, Path],
) -> None:
    """A socket fd stands in for a tap (the root test passes a real tap)."""
    proc, client, _ = qemu
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    try:
        client.send_fd("sock0", a.fileno())
        client.execute("netdev_add", {"type": "socket", "id": "n0", "fd": "sock0"})
        # the name is consumed by its first use
        with pytest.raises(TapvirtError, match="has not been found"):
            client.execute("netdev_add", {"type": "socket", "id": "n1", "fd": "sock0"})
        fds = os.listdir(f"/proc/{proc.pid}/fd")
        inodes = {os.readlink(f"/proc/{proc.pid}/fd/{fd}") for fd in fds}
        assert f"socket:[{os.fstat(a.fileno()).st_ino}]" in inodes
    finally:
        a.close()
        b.close()


def test_qemu_exit_during_command_is_reported(
    qemu: tuple[process.Process, QmpClient, Path],
) -> None:
    proc, client, _ = qemu
    client.execute("quit")
    proc.wait(10)
    with pytest.raises(TapvirtError) as info:
        client.execute("query-status")
    assert info.value.code is codes.QMP_UNAVAILABLE


def test_timeout(tmp_path: Path) -> None:
    """A server that greets but never answers: the command times out, no hang."""
    path = str(tmp_path / "s")
    srv = socket.socket(socket.AF_UNIX)
    srv.bind(path)
    srv.listen(1)

    def serve() -> None:
        conn, _ = srv.accept()
        conn.sendall(b'{"QMP": {"version": {}, "capabilities": []}}\r\n')
        conn.recv(100)
        conn.sendall(b'{"return": {}, "id": "tv1"}\r\n')
        conn.recv(100)  # swallow the next command, never answer
        threading.Event().wait(2)
        conn.close()

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    client = QmpClient.connect(path, timeout=2)
    with pytest.raises(TapvirtError) as info:
        client.execute("query-status", timeout=0.3)
    assert info.value.code is codes.QMP_TIMEOUT
    client.close()
    srv.close()


def test_connect_to_nothing(tmp_path: Path) -> None:
    with pytest.raises(TapvirtError) as info:
        QmpClient.connect(str(tmp_path / "absent.sock"), timeout=1)
    assert info.value.code is codes.QMP_UNAVAILABLE


def test_qemu_failing_at_start_quotes_its_stderr(tmp_path: Path) -> None:
    qmp = tmp_path / "qmp.sock"
    log = tmp_path / "qemu.log"
    proc = process.spawn(_argv(qmp, "-netdev", "tap,id=n0,fd=77"), pass_fds=(),
                         log_path=str(log))
    with pytest.raises(TapvirtError) as info:
        process.wait_for_qmp(proc, str(qmp), log_path=str(log), timeout=20)
    assert info.value.code is codes.QEMU_FAILED
    assert "77" in info.value.cause  # QEMU's own words about the bad fd
    assert proc.poll() is not None  # reaped


def test_missing_emulator(tmp_path: Path) -> None:
    with pytest.raises(TapvirtError) as info:
        process.spawn([str(tmp_path / "no-qemu")], pass_fds=(), log_path=str(tmp_path / "l"))
    assert info.value.code is codes.EMULATOR_MISSING


def test_only_passed_fds_are_inherited(tmp_path: Path) -> None:
    keep_r, keep_w = os.pipe()
    other_r, other_w = os.pipe()
    os.set_inheritable(other_r, True)  # inheritable, but not in pass_fds: must not leak
    qmp = tmp_path / "qmp.sock"
    log = tmp_path / "qemu.log"
    proc = process.spawn(_argv(qmp), pass_fds=(keep_r,), log_path=str(log))
    try:
        process.wait_for_qmp(proc, str(qmp), log_path=str(log), timeout=20).close()
        targets = {os.readlink(f"/proc/{proc.pid}/fd/{fd}")
                   for fd in os.listdir(f"/proc/{proc.pid}/fd")}
        assert f"pipe:[{os.fstat(keep_r).st_ino}]" in targets
        assert f"pipe:[{os.fstat(other_r).st_ino}]" not in targets
        assert os.readlink(f"/proc/{proc.pid}/fd/0") == "/dev/null"
    finally:
        assert process.stop(proc) == 0  # SIGTERM: QEMU exits cleanly
        for fd in (keep_r, keep_w, other_r, other_w):
            os.close(fd)
    assert not process.pid_alive(proc.pid)


def test_fds_are_renumbered_as_the_command_line_says(tmp_path: Path) -> None:
    """Two pipes swap numbers on the way in: ours a -> QEMU's b and ours b -> QEMU's a."""
    a_r, a_w = os.pipe()
    b_r, b_w = os.pipe()
    qmp = tmp_path / "qmp.sock"
    log = tmp_path / "qemu.log"
    proc = process.spawn(_argv(qmp), fd_map=[(a_r, b_r), (b_r, a_r)], log_path=str(log))
    try:
        process.wait_for_qmp(proc, str(qmp), log_path=str(log), timeout=20).close()
        assert os.readlink(f"/proc/{proc.pid}/fd/{b_r}") == f"pipe:[{os.fstat(a_r).st_ino}]"
        assert os.readlink(f"/proc/{proc.pid}/fd/{a_r}") == f"pipe:[{os.fstat(b_r).st_ino}]"
        assert not os.path.exists(f"/proc/{proc.pid}/fd/{a_w}")
    finally:
        process.stop(proc)
        for fd in (a_r, a_w, b_r, b_w):
            os.close(fd)
