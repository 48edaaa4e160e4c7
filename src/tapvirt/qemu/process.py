"""Spawn QEMU with exactly the fds it needs, wait for its QMP socket, stop and reap it.

QEMU inherits only the fds in `pass_fds` (everything else of ours is O_CLOEXEC or
closed by subprocess), reads /dev/null and writes stdout/stderr to a log file that
the error message quotes when QEMU exits early. Stdlib only: this runs in the
supervisor, which must stay small.
"""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import subprocess
import time
from collections.abc import Sequence

from tapvirt.domains.errors import EMULATOR_MISSING, QEMU_FAILED, START_TIMEOUT, STOP_TIMEOUT
from tapvirt.errors import TapvirtError
from tapvirt.qemu.qmp import QmpClient

LOG_TAIL = 1500


def spawn(argv: Sequence[str], *, pass_fds: Sequence[int], log_path: str,
          subject: str = "qemu") -> subprocess.Popen[bytes]:
    """Start QEMU. Its stdout and stderr append to `log_path` (created 0600)."""
    log_fd = os.open(log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        return subprocess.Popen(
            list(argv), stdin=subprocess.DEVNULL, stdout=log_fd, stderr=log_fd,
            pass_fds=tuple(pass_fds), close_fds=True,
        )
    except (FileNotFoundError, PermissionError) as exc:
        raise TapvirtError(
            EMULATOR_MISSING, subject, f"cannot run {argv[0]}: {exc.strerror}",
            "install QEMU (apt-get install qemu-system-x86) or fix <emulator>",
        ) from None
    finally:
        os.close(log_fd)


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


def wait_for_qmp(proc: subprocess.Popen[bytes], qmp_path: str, *, log_path: str,
                 timeout: float = 10.0, subject: str = "qemu") -> QmpClient:
    """Poll until QEMU's QMP socket answers; QEMU ending first is an error quoting its log."""
    deadline = time.monotonic() + timeout
    delay = 0.002
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
        time.sleep(delay)
        delay = min(delay * 2, 0.02)


def stop(proc: subprocess.Popen[bytes], *, grace: float = 3.0, subject: str = "qemu") -> int:
    """SIGTERM, then SIGKILL after `grace` seconds; reap and return the exit status."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        try:
            return proc.wait(grace)
        except subprocess.TimeoutExpired:
            pass
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        try:
            return proc.wait(10.0)
        except subprocess.TimeoutExpired:
            raise TapvirtError(
                STOP_TIMEOUT, subject,
                f"QEMU (pid {proc.pid}) did not end 10 s after SIGKILL",
                f"look at /proc/{proc.pid}/stack; the process is stuck in the kernel",
            ) from None
    return proc.returncode


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
