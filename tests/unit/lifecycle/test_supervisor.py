"""The per-guest supervisor against a real QEMU (no guest OS needed: -S, then cont)."""

from __future__ import annotations

import os
import shutil
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tapvirt.domains import api, runtime
from tapvirt.domains.runtime import RUNNING, SHUTOFF, DomainDir
from tapvirt.qemu.process import pid_alive
from tests.support.reaper import reap_module_orphans  # noqa: F401 (autouse fixture)

QEMU = shutil.which("qemu-system-x86_64")
pytestmark = pytest.mark.skipif(QEMU is None, reason="qemu-system-x86_64 is not installed")


@pytest.fixture
def dd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[DomainDir]:
    xdg = tmp_path / "xdg"
    xdg.mkdir(mode=0o700)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(xdg))
    d = DomainDir(runtime.runtime_root(), "sup1").ensure()
    try:
        yield d
    finally:
        st = d.read()
        for pid in (st.supervisor_pid, st.qemu_pid):
            if pid and pid_alive(pid):
                os.kill(pid, signal.SIGKILL)


def _job(dd: DomainDir, **over: Any) -> dict[str, Any]:
    assert QEMU is not None
    job: dict[str, Any] = {
        "name": dd.name, "uuid": "00000000-0000-0000-0000-000000000001", "root": str(dd.root),
        "argv": [QEMU, "-accel", "tcg", "-m", "32", "-nodefaults", "-display", "none", "-S",
                 "-qmp", f"unix:{dd.qmp_socket},server=on,wait=off"],
        "launcher_pid": os.getpid(), "on_poweroff": "destroy", "on_crash": "destroy",
        "interfaces": [], "to_delete": [], "start_timeout": 20,
    }
    job.update(over)
    return job


def _start(dd: DomainDir, fds: tuple[int, ...] = (), **over: Any) -> dict[str, Any]:
    sup = api.PendingSupervisor(dd)
    sup.send(_job(dd, **over), list(fds))
    sup.reap()
    msg = sup.reply(30)
    sup.close()
    assert msg is not None
    return msg


def _wait(pred: Any, timeout: float) -> float:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if pred():
            return time.monotonic() - t0
        time.sleep(0.01)
    raise AssertionError("condition not met in time")


def _ppid(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def test_runs_guest_and_notices_sigkill_within_a_second(dd: DomainDir) -> None:
    msg = _start(dd)
    assert msg["ok"], msg
    st = dd.read()
    assert st.state == RUNNING and st.qemu_pid == msg["qemu_pid"]
    assert st.qemu_pid is not None and st.supervisor_pid is not None
    assert _ppid(st.qemu_pid) == st.supervisor_pid  # it can waitpid: no zombie later
    assert dd.qmp_socket.stat().st_mode & 0o777 == 0o600
    assert dd.path.stat().st_mode & 0o777 == 0o700
    assert os.getsid(st.supervisor_pid) != os.getsid(0)  # detached from the launcher
    # small: no lxml, no pyroute2 (goal <= 15 MiB)
    assert _rss_kib(st.supervisor_pid) < 15 * 1024
    modules = Path(f"/proc/{st.supervisor_pid}/maps").read_text()
    assert "lxml" not in modules and "pyroute2" not in modules
    os.kill(st.qemu_pid, signal.SIGKILL)
    took = _wait(lambda: dd.read().state == SHUTOFF, 10)
    assert took < 2.0  # typically 10-30 ms (pidfd); the goal is 1 s, slack for a busy host
    final = dd.read()
    assert final.reason == "crashed" and final.exit_status == -signal.SIGKILL
    assert not dd.qmp_socket.exists()
    _wait(lambda: not pid_alive(st.supervisor_pid or 0), 3)


def test_destroy_via_supervisor(dd: DomainDir) -> None:
    assert _start(dd)["ok"]
    st = dd.read()
    os.kill(st.supervisor_pid or 0, signal.SIGTERM)
    _wait(lambda: dd.read().state == SHUTOFF, 15)
    assert dd.read().reason == "destroyed"
    assert not pid_alive(st.qemu_pid or 0)


def test_on_crash_restart(dd: DomainDir) -> None:
    assert _start(dd, on_crash="restart")["ok"]
    first = dd.read()
    os.kill(first.qemu_pid or 0, signal.SIGKILL)
    _wait(lambda: dd.read().restarts == 1 and dd.read().state == RUNNING, 10)
    second = dd.read()
    assert second.qemu_pid != first.qemu_pid and second.supervisor_pid == first.supervisor_pid
    os.kill(second.supervisor_pid or 0, signal.SIGTERM)
    _wait(lambda: dd.read().state == SHUTOFF, 15)
    assert dd.read().reason == "destroyed"


def test_guest_poweroff_is_shutdown(dd: DomainDir) -> None:
    from tapvirt.qemu.qmp import QmpClient

    assert _start(dd)["ok"]
    with QmpClient.connect(str(dd.qmp_socket)) as qmp:
        qmp.execute("quit")  # QEMU exits with status 0, as after a guest power-off
    _wait(lambda: dd.read().state == SHUTOFF, 3)
    assert dd.read().reason == "shutdown" and dd.read().exit_status == 0


def test_qemu_failing_at_start(dd: DomainDir) -> None:
    assert QEMU is not None
    msg = _start(dd, argv=[QEMU, "-no-such-option"])
    assert not msg["ok"]
    assert msg["error"]["code"] == "qemu-failed"
    assert "no-such-option" in msg["error"]["cause"]
    st = dd.read()
    assert st.state == SHUTOFF and st.reason == "failed"
    _wait(lambda: not pid_alive(st.supervisor_pid or 0), 3)


def test_transient_domain_leaves_nothing(dd: DomainDir) -> None:
    assert _start(dd, transient=True)["ok"]
    st = dd.read()
    os.kill(st.supervisor_pid or 0, signal.SIGTERM)
    _wait(lambda: not dd.path.exists(), 15)


def test_paused_start_then_resume(dd: DomainDir) -> None:
    from tapvirt.domains.runtime import PAUSED
    from tapvirt.qemu.qmp import QmpClient

    assert _start(dd, paused=True)["ok"]
    assert dd.read().state == PAUSED
    with QmpClient.connect(str(dd.qmp_socket)) as qmp:
        assert qmp.status() == "prelaunch"
    assert api.resume(dd.name).state == RUNNING
    with QmpClient.connect(str(dd.qmp_socket)) as qmp:
        assert qmp.status() == "running"
    assert dd.read().state == RUNNING and dd.read().reason == "unpaused"


def test_on_poweroff_restart(dd: DomainDir) -> None:
    from tapvirt.qemu.qmp import QmpClient

    assert _start(dd, on_poweroff="restart")["ok"]
    first = dd.read()
    with QmpClient.connect(str(dd.qmp_socket)) as qmp:
        qmp.execute("quit")  # exit status 0, like a guest power-off
    _wait(lambda: dd.read().restarts == 1 and dd.read().state == RUNNING, 10)
    assert dd.read().qemu_pid != first.qemu_pid
    os.kill(first.supervisor_pid or 0, signal.SIGTERM)
    _wait(lambda: dd.read().state == SHUTOFF, 15)


def test_shutdown_of_a_guest_that_ignores_acpi_destroys_it(dd: DomainDir) -> None:
    """No OS runs (nothing answers the power button): after the timeout, destroy."""
    assert _start(dd, on_poweroff="restart")["ok"]
    st = api.shutdown(dd.name, timeout=1)
    assert st.state == SHUTOFF and "destroyed" in st.reason
    assert not pid_alive(dd.read().qemu_pid or 0)


def test_console_follows_until_the_guest_stops(dd: DomainDir) -> None:
    """`console NAME` streams the serial log and returns once the guest is shut off."""
    import threading

    from tapvirt.conf.format import format_domain
    from tapvirt.conf.model import Chardev, ChardevKind, ChardevType, Devices, Domain
    from tapvirt.qemu.qmp import QmpClient

    dom = Domain(name=dd.name, uuid="00000000-0000-0000-0000-000000000001",
                 devices=Devices(serials=(Chardev(ChardevKind.SERIAL, ChardevType.FILE,
                                                  path=str(dd.console_log)),)))
    dd.domain_xml.write_text(format_domain(dom, live=True))
    job = _job(dd)
    job["argv"] += ["-serial", f"file:{dd.console_log}"]
    assert _start(dd, argv=job["argv"])["ok"]
    chunks: list[bytes] = []
    done = threading.Event()

    def follow() -> None:
        for chunk in api.follow_console(dd.name, poll=0.02):
            chunks.append(chunk)
        done.set()

    threading.Thread(target=follow, daemon=True).start()
    time.sleep(0.2)
    with open(dd.console_log, "ab") as f:  # what the guest would print on its serial port
        f.write(b"TV-MARKER from the guest\n")
    _wait(lambda: b"TV-MARKER" in b"".join(chunks), 15)
    assert not done.is_set()  # still following a running guest
    with QmpClient.connect(str(dd.qmp_socket)) as qmp:
        qmp.execute("quit")
    assert done.wait(10)
