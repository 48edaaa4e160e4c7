"""Guests without a supervisor: QEMU started directly by the launcher (issue 14).

A per-guest supervisor costs a Python process (~7 MiB PSS) and its start-up on the
critical path of every start. Most guests need nothing supervised, so with
`TAPVIRT_SUPERVISOR=auto` a domain gets one only when something must happen at the
moment QEMU ends or beside it (`why_supervised`):

    on_poweroff / on_crash restart   QEMU must be started again when it ends
    a <tpm> emulator                 swtpm is a helper process to run and stop
    managed devices                  links tapvirt created must be deleted at stop

Everything else is "direct": the launcher spawns QEMU itself (own session, stdin
/dev/null, stdout/stderr to qemu.log, QMP on the runtime dir's socket), hands it the
tap fds, sends the start-up commands and `cont`, records pid + start time and exits.
QEMU is then nobody's child but init's. Each duty of the supervisor goes elsewhere:

    guest power-off / on_reboot destroy   QEMU exits by itself (no -no-shutdown;
                                          -no-reboot)
    console log                           QEMU's chardev logfile= (as before)
    events (STOP/RESUME/SHUTDOWN ...)     QEMU writes them itself to events.out: a
                                          second QMP monitor on a `pipe` chardev whose
                                          input FIFO (events.in) holds one
                                          qmp_capabilities line, written by the launcher
    state after an event                  the next command applies the new lines of
                                          events.out (`refresh`)
    "shut off" and its reason             the next command that finds the pid gone
                                          (pid + start time: no reuse) reads the last
                                          SHUTDOWN event: guest-shutdown -> shutdown,
                                          host-signal/qmp-quit -> destroyed, none or
                                          guest-panic -> crashed
    live changes (hotplug, link ...)      the verb runs its QMP steps itself, under
                                          RUNTIME/NAME/monitor.lock (one at a time), and
                                          records the change (`transact`)
    ACPI reboot                           libvirt's fake reboot in the same QEMU:
                                          set-action shutdown=pause, system_powerdown,
                                          SHUTDOWN, system_reset, cont

Stdlib only (plus tapvirt's small lifecycle modules): the verbs import it.
"""

from __future__ import annotations

import contextlib
import json
import os
import stat
import time
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

from tapvirt.domains.errors import DOMAIN_BUSY, DOMAIN_NOT_RUNNING, SUPERVISOR_SETTING_INVALID
from tapvirt.domains.runtime import PAUSED, RUNNING, DomainDir, State, flock_within
from tapvirt.errors import INTERNAL, TapvirtError

if TYPE_CHECKING:
    from tapvirt.conf.model import Domain

SETTING = "TAPVIRT_SUPERVISOR"
MODES = ("always", "auto")
DEFAULT_MODE = "always"
CAPABILITIES = b'{"execute": "qmp_capabilities"}\n'
MONITOR_LOCK_WAIT = 60.0
# QEMU's SHUTDOWN reasons (ShutdownCause) -> the reason a shut-off guest shows
_EXIT_REASONS = {"guest-shutdown": "shutdown", "guest-reset": "shutdown",
                 "host-qmp-quit": "destroyed", "host-signal": "destroyed",
                 "host-ui": "destroyed", "guest-panic": "crashed"}


# -- which guests get a supervisor -------------------------------------------------------

def mode() -> str:
    """The user's setting: `always` (every guest has a supervisor) or `auto` (only the
    guests that need one)."""
    value = os.environ.get(SETTING, "").strip() or DEFAULT_MODE
    if value not in MODES:
        raise TapvirtError(
            SUPERVISOR_SETTING_INVALID, SETTING, f"is {value!r:.40}",
            f"set {SETTING}=auto (a supervisor only for guests that need one) or "
            f"{SETTING}=always, or unset it (default {DEFAULT_MODE})")
    return value


def why_supervised(dom: Domain, *, to_delete: Sequence[str], tpm: object) -> str | None:
    """Why this start needs a supervisor, or None: it can run direct."""
    from tapvirt.conf.model import LifecycleAction

    if mode() == "always":
        return f"{SETTING}=always"
    # preserve and rename-restart act like destroy (docs/lifecycle.md): QEMU's own exit
    if dom.on_poweroff is LifecycleAction.RESTART:
        return "<on_poweroff>restart</on_poweroff>"
    if dom.on_crash is LifecycleAction.RESTART:
        return "<on_crash>restart</on_crash>"
    if tpm is not None:
        return "<tpm> runs swtpm beside QEMU"
    if to_delete:
        return "managed devices to delete at stop: " + ", ".join(to_delete)
    return None


# -- QEMU's own events log ---------------------------------------------------------------

def monitor_args(dd: DomainDir) -> list[str]:
    """The events monitor QEMU writes to events.out (a `pipe` chardev: PATH.in/.out)."""
    path = str(dd.events_pipe).replace(",", ",,")
    return ["-chardev", f"pipe,id=charevents,path={path}",
            "-mon", "chardev=charevents,id=events,mode=control"]


def prepare_events(dd: DomainDir) -> int:
    """A fresh events.out and an events.in FIFO holding the capabilities negotiation;
    returns our fd of the FIFO, to keep open until QEMU has opened it (QMP answers)."""
    fifo = f"{dd.events_pipe}.in"
    with contextlib.suppress(FileNotFoundError):
        os.unlink(fifo)
    os.mkfifo(fifo, 0o600)
    fd = os.open(fifo, os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        os.write(fd, CAPABILITIES)
        out = os.open(dd.events_log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW
                      | os.O_CLOEXEC, 0o600)
        os.close(out)
    except BaseException:
        os.close(fd)
        raise
    return fd


def read_events(dd: DomainDir, offset: int) -> tuple[list[dict[str, Any]], int]:
    """The events QEMU logged after byte `offset` (complete lines only), and the offset
    after them. The greeting and the capabilities' answer are not events."""
    try:
        fd = os.open(dd.events_log, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return [], offset
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return [], offset
        os.lseek(fd, offset, os.SEEK_SET)
        chunks = []
        while chunk := os.read(fd, 1 << 16):
            chunks.append(chunk)
    finally:
        os.close(fd)
    data = b"".join(chunks)
    end = data.rfind(b"\n") + 1
    events = []
    for line in data[:end].splitlines():
        with contextlib.suppress(ValueError):
            msg = json.loads(line)
            if isinstance(msg, dict) and isinstance(msg.get("event"), str):
                events.append(msg)
    return events, offset + end


def exit_reason(dd: DomainDir) -> str:
    """Why QEMU ended, from its last SHUTDOWN event (one followed by a RESET or RESUME
    was a fake reboot's, not the end)."""
    cause = None
    for ev in read_events(dd, 0)[0]:
        if ev["event"] == "SHUTDOWN":
            cause = str((ev.get("data") or {}).get("reason", ""))
        elif ev["event"] in ("RESET", "RESUME"):
            cause = None
    return _EXIT_REASONS.get(cause or "", "crashed")


def refresh(dd: DomainDir, st: State) -> State:
    """A running direct guest's state with the events QEMU logged since it was last
    recorded (paused by an I/O error, resumed from the monitor ...). Recorded when no
    live change holds the monitor lock, else returned as computed."""
    events, end = read_events(dd, st.events_offset)
    if end == st.events_offset:
        return st
    with monitor_lock(dd, wait=0, required=False) as held:
        if held:
            with contextlib.suppress(TapvirtError):
                st = dd.read()
            events, end = read_events(dd, st.events_offset)
        _apply(dd, st, events, end)
        if held:
            with contextlib.suppress(TapvirtError):
                dd.write(st)
    return st


def _apply(dd: DomainDir, st: State, events: list[dict[str, Any]], end: int) -> None:
    from tapvirt.domains import events as ev_mod

    pending = ev_mod.Pending()
    for ev in events:
        _, line = ev_mod.apply(st, ev, pending)
        if line:
            log(dd, line)
    st.events_offset = end


def log(dd: DomainDir, msg: str) -> None:
    """A lifecycle line in the domain's log (supervisor.log: the same place and form a
    supervisor writes). Never raises."""
    line = f"{time.strftime('%Y-%m-%d %H:%M:%S')} tapvirt[{os.getpid()}]: {msg}\n"
    with contextlib.suppress(OSError):
        fd = os.open(dd.supervisor_log, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC,
                     0o600)
        try:
            os.write(fd, line.encode())
        finally:
            os.close(fd)


# -- start ---------------------------------------------------------------------------------

def launch(dd: DomainDir, state: State, argv: list[str], fd_map: list[tuple[int, int]], *,
           qmp_before_cont: list[dict[str, Any]], private_sockets: list[str], paused: bool,
           timeout: float, trace: Any = None) -> None:
    """Spawn QEMU detached and paused, wait for QMP, run the start-up commands and
    `cont`; `state` (STARTING, direct) is recorded with QEMU's pid first, then running.
    On any failure QEMU is stopped and the error raised (the caller marks shut off)."""
    from tapvirt.domains.agent import secure_sockets
    from tapvirt.qemu import process

    qmp_path = str(dd.qmp_socket)
    subject = f"domain {state.name}"
    with contextlib.suppress(FileNotFoundError):
        os.unlink(qmp_path)
    with contextlib.suppress(FileNotFoundError):
        os.replace(dd.console_log, str(dd.console_log) + ".old")
    fifo = prepare_events(dd)
    try:
        # QEMU must not pin the caller's working directory (paths in XML are absolute)
        cwd = os.open(".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            os.chdir("/")
            proc = process.spawn(argv + monitor_args(dd), fd_map=fd_map,
                                 log_path=str(dd.qemu_log), subject=subject, setsid=True)
        finally:
            os.fchdir(cwd)
            os.close(cwd)
        if trace:
            trace("qemu spawned")
        state.direct = True
        state.qemu_pid = proc.pid
        state.qemu_start = process.proc_starttime(proc.pid)
        dd.write(state)  # a pid on disk before anything can fail
        try:
            client = process.wait_for_qmp(proc, qmp_path, log_path=str(dd.qemu_log),
                                          timeout=timeout, subject=subject)
            if trace:
                trace("qmp answered")
            os.chmod(qmp_path, 0o600)
            secure_sockets(os.path.dirname(qmp_path))
            for path in private_sockets:
                with contextlib.suppress(OSError):
                    os.chmod(path, 0o600)
            with client:
                for cmd in qmp_before_cont:
                    client.execute(cmd["execute"], cmd.get("arguments"))
                if not paused:
                    client.execute("cont")
                status = client.status()
            want = "prelaunch" if paused else "running"
            if status != want:
                raise TapvirtError(INTERNAL, subject, f"QEMU is {status!r}, not {want!r}")
        except BaseException:
            process.stop(proc, subject=subject)
            raise
    finally:
        os.close(fifo)
    if trace:
        trace("cont done")
    state.state = PAUSED if paused else RUNNING
    state.reason = "started paused" if paused else "booted"
    log(dd, f"QEMU {proc.pid} started without a supervisor")
    dd.write(state)


# -- live changes ----------------------------------------------------------------------------

@contextlib.contextmanager
def monitor_lock(dd: DomainDir, *, wait: float = MONITOR_LOCK_WAIT,
                 required: bool = True) -> Iterator[bool]:
    """One QMP session of a verb (and one writer of the state) at a time for a direct
    guest: what its supervisor's single loop guarantees for a supervised one. With
    `required` False, yields False instead of failing when another holds it."""
    fd = os.open(dd.path / "monitor.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        got = flock_within(fd, wait)
        if not got and required:
            raise TapvirtError(
                DOMAIN_BUSY, f"domain {dd.name}",
                f"another command has used its monitor for {wait:g} s",
                "wait for it to finish, then retry")
        yield got
    finally:
        os.close(fd)


def transact(dd: DomainDir, steps: list[dict[str, Any]], commit: dict[str, Any],
             fds: list[int], *, timeout: float) -> dict[str, Any]:
    """What a supervisor's control socket does for one request (see
    tapvirt.domains.control), run by the verb itself: the reply has the same form."""
    from tapvirt.domains import control
    from tapvirt.qemu.process import pid_alive, proc_starttime
    from tapvirt.qemu.qmp import QmpClient

    subject = f"domain {dd.name}"
    with monitor_lock(dd, wait=timeout):
        try:
            st = dd.read()
        except TapvirtError as err:
            return {"ok": False, "error": err.to_json()}
        alive = bool(st.qemu_pid) and pid_alive(st.qemu_pid or 0) and \
            proc_starttime(st.qemu_pid or 0) == st.qemu_start
        if not alive or st.state not in (RUNNING, PAUSED):
            return {"ok": False, "error": TapvirtError(
                DOMAIN_NOT_RUNNING, subject, f"it is {st.state if alive else 'gone'}",
                f"start it: tapvirt start {dd.name}").to_json()}
        events, end = read_events(dd, st.events_offset)
        _apply(dd, st, events, end)
        try:
            with QmpClient.connect(str(dd.qmp_socket), subject=subject, timeout=5) as qmp:
                results = control.run_steps(qmp, steps, fds, lambda m: log(dd, m))
        except control.StepFailed as failed:
            log(dd, f"live change failed at step {failed.index}: {failed.error.get('cause')}")
            return {"ok": False, "error": failed.error, "step": failed.index}
        except TapvirtError as err:
            return {"ok": False, "error": err.to_json()}
        if "state" in commit:  # the commit says what the change's own events did
            end = read_events(dd, end)[1]
            st.events_offset = end
        if commit:
            line = control.apply_commit(dd, st, commit)
            if line:
                log(dd, line)
        elif events:
            with contextlib.suppress(TapvirtError):
                dd.write(st)
        return {"ok": True, "results": results}


def fake_reboot_steps(timeout: float, name: str) -> list[dict[str, Any]]:
    """ACPI reboot of a direct guest, as libvirt's fake reboot: the power-off pauses
    QEMU instead of ending it, then reset and run. The same QEMU, the same devices."""
    restore = {"execute": "set-action", "arguments": {"shutdown": "poweroff"}}
    return [
        {"execute": "set-action", "arguments": {"shutdown": "pause"}, "undo": restore},
        {"execute": "system_powerdown"},
        {"wait_event": "SHUTDOWN", "timeout": timeout, "error": {
            "code": "control-failed", "subject": f"domain {name}",
            "cause": f"the guest did not power off within {timeout:g} s",
            "fix": f"use tapvirt reboot --mode reset {name}"}},
        {"execute": "system_reset"},
        restore,
        {"execute": "cont"},
    ]
