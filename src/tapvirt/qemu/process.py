"""Spawn QEMU with exactly the fds it needs, wait for its QMP socket, stop and reap it.

QEMU inherits only the fds it is given, under the numbers its command line names
(`fd_map`: our fd -> QEMU's fd; everything else of ours is O_CLOEXEC), reads /dev/null
and writes stdout/stderr to a log file that the error message quotes when QEMU exits
early. `os.posix_spawnp` instead of `subprocess`: it can renumber fds, and it keeps the
supervisor, which imports this, small.
"""

from __future__ import annotations

import contextlib
import errno
import os
import select
import signal
import time
from collections.abc import Sequence

from tapvirt.domains.errors import EMULATOR_MISSING, QEMU_FAILED, START_TIMEOUT, STOP_TIMEOUT
from tapvirt.errors import TapvirtError
from tapvirt.qemu.qmp import QmpClient

LOG_TAIL = 1500
# dispositions the child must not inherit (Python ignores SIGPIPE; the supervisor
# ignores SIGINT/SIGHUP and handles SIGTERM/SIGUSR1 itself)
_DEFAULT_SIGNALS = (signal.SIGPIPE, signal.SIGXFSZ, signal.SIGINT, signal.SIGHUP,
                    signal.SIGTERM, signal.SIGUSR1)


class TimeoutExpired(Exception):
    pass


class Process:
    """A spawned child, the few `subprocess.Popen` methods tapvirt needs."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.returncode: int | None = None

    def poll(self) -> int | None:
        if self.returncode is None:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        if self.returncode is not None:
            return self.returncode
        if timeout is not None:
            pidfd = os.pidfd_open(self.pid)
            try:
                if not select.select([pidfd], [], [], timeout)[0]:
                    raise TimeoutExpired(self.pid)
            finally:
                os.close(pidfd)
        _, status = os.waitpid(self.pid, 0)
        self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def send_signal(self, sig: int) -> None:
        if self.returncode is None:
            os.kill(self.pid, sig)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)


def remap_actions(pairs: Sequence[tuple[int, int]]) -> list[tuple[int, ...]]:
    """posix_spawn file actions giving the child each of our fds under its new number,
    and no other fd of ours.

    Sources may overlap targets (ours 4 -> 3 while ours 3 -> 4): every source is first
    copied above all of them, then moved down; dup2 clears close-on-exec."""
    open_fds = _inheritable_fds()
    high = max([max(p) for p in pairs] + open_fds + [2]) + 1
    acts: list[tuple[int, ...]] = [(os.POSIX_SPAWN_DUP2, src, high + i)
                                   for i, (src, _) in enumerate(pairs)]
    # posix_spawn, unlike subprocess, does not close what is merely inheritable
    targets = {dst for _, dst in pairs}
    acts += [(os.POSIX_SPAWN_CLOSE, fd) for fd in open_fds if fd > 2 and fd not in targets]
    acts += [(os.POSIX_SPAWN_DUP2, high + i, dst) for i, (_, dst) in enumerate(pairs)]
    acts += [(os.POSIX_SPAWN_CLOSE, high + i) for i in range(len(pairs))]
    return acts


def _inheritable_fds() -> list[int]:
    out = []
    for name in os.listdir("/proc/self/fd"):
        fd = int(name)
        with contextlib.suppress(OSError):  # the listing's own fd is gone by now
            if os.get_inheritable(fd):
                out.append(fd)
    return out


def spawn(argv: Sequence[str], *, log_path: str, pass_fds: Sequence[int] = (),
          fd_map: Sequence[tuple[int, int]] = (), subject: str = "qemu",
          setsid: bool = False) -> Process:
    """Start QEMU. `pass_fds` keep their numbers, `fd_map` renumbers (ours, QEMU's).
    Its stdout and stderr append to `log_path` (created 0600). `setsid`: in a session
    of its own (a guest without supervisor: no terminal's signals reach it)."""
    log_fd = os.open(log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
    pairs = [(fd, fd) for fd in pass_fds] + list(fd_map)
    actions: list[tuple[int | str, ...]] = [
        (os.POSIX_SPAWN_OPEN, 0, "/dev/null", os.O_RDONLY, 0),
        (os.POSIX_SPAWN_DUP2, log_fd, 1),
        (os.POSIX_SPAWN_DUP2, log_fd, 2),
        *remap_actions(pairs),
    ]
    try:
        pid = os.posix_spawnp(argv[0], list(argv), os.environ, file_actions=actions,
                              setsigdef=_DEFAULT_SIGNALS, setsigmask=(), setsid=setsid)
    except OSError as exc:
        raise TapvirtError(
            EMULATOR_MISSING, subject, f"cannot run {argv[0]}: {exc.strerror}",
            "install QEMU (apt-get install qemu-system-x86) or fix <emulator>",
        ) from None
    finally:
        os.close(log_fd)
    return Process(pid)


def log_tail(log_path: str, limit: int = LOG_TAIL) -> str:
    """The end of QEMU's log, for error messages ('' if unreadable)."""
    try:
        with open(log_path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - limit))
            return f.read().decode(errors="replace").strip()
    except OSError:
        return ""


def describe_exit(code: int) -> str:
    if code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with status {code}"


def wait_for_qmp(proc: Process, qmp_path: str, *, log_path: str,
                 timeout: float = 10.0, subject: str = "qemu") -> QmpClient:
    """Poll until QEMU's QMP socket answers; QEMU ending first is an error quoting its log."""
    started = time.monotonic()
    deadline = started + timeout
    while True:
        code = proc.poll()
        if code is not None:
            tail = log_tail(log_path)
            raise TapvirtError(
                QEMU_FAILED, subject, f"QEMU {describe_exit(code)} during start-up"
                + (f": {tail}" if tail else ""),
                f"read the whole log: {log_path}",
                details={"exit": code, "log": log_path},
            )
        if os.path.exists(qmp_path):
            try:
                return QmpClient.connect(qmp_path, subject=subject,
                                         timeout=max(1.0, deadline - time.monotonic()))
            except TapvirtError:
                if proc.poll() is not None:
                    continue  # report QEMU's own exit instead
                if time.monotonic() > deadline:
                    raise
        if time.monotonic() > deadline:
            raise TapvirtError(
                START_TIMEOUT, subject,
                f"QEMU did not open its QMP socket {qmp_path} within {timeout:g} s",
                "the host may be overloaded; the log may say more: " + log_path,
            )
        # QEMU opens the socket ~15 ms after spawn: poll finely at first (a stat is ~1 us),
        # since every millisecond late here is a millisecond of every start; back off
        # once it is clearly slow.
        time.sleep(0.001 if time.monotonic() - started < 0.5 else 0.02)


def stop(proc: Process, *, grace: float = 3.0, subject: str = "qemu") -> int:
    """SIGTERM, then SIGKILL after `grace` seconds; reap and return the exit status."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        try:
            return proc.wait(grace)
        except TimeoutExpired:
            pass
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        try:
            return proc.wait(10.0)
        except TimeoutExpired:
            raise TapvirtError(
                STOP_TIMEOUT, subject,
                f"QEMU (pid {proc.pid}) did not end 10 s after SIGKILL",
                f"look at /proc/{proc.pid}/stack; the process is stuck in the kernel",
            ) from None
    return proc.wait()


def pid_alive(pid: int) -> bool:
    """Whether a process exists (zombies count as ended)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            state = f.read().rsplit(b")", 1)[1].split()[0]
        return state not in (b"Z", b"X")
    except (OSError, IndexError):
        return False


def proc_starttime(pid: int) -> int | None:
    """The process start time (clock ticks since boot): tells a reused pid apart."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return int(f.read().rsplit(b")", 1)[1].split()[19])
    except (OSError, IndexError, ValueError):
        return None


def kill_quietly(pid: int, sig: int) -> bool:
    try:
        os.kill(pid, sig)
    except OSError as exc:
        if exc.errno == errno.ESRCH:
            return False
        raise
    return True
