"""`tapvirt console NAME`: an interactive session on the guest's serial port 0, like
`virsh console`.

Keystrokes go to the guest's serial port (the pty QEMU made for a `pty` serial, or the
listening unix socket of a `unix` one), the guest's output goes to stdout. `Ctrl+]`
detaches and leaves the guest running. One console at a time: `NAME/console.lock` is an
flock held while attached, a second user gets `console-busy`; `force` makes the holder
let go (SIGTERM: it restores its terminal and exits) and takes over.

The local terminal is put in raw mode only when stdin is a tty and restored on every way
out (detach, guest stopped, SIGTERM/SIGHUP, an error). With a non-tty stdin (a script),
bytes are forwarded as they are; at stdin's end, output is still copied until the guest
has been quiet for `linger` seconds, so `printf 'cmd\\n' | tapvirt console NAME` prints the
command's output.

The console log (`console --log`) keeps recording meanwhile: QEMU copies serial output to
it itself (chardev `logfile=`, see api._with_console_log)."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import select
import signal
import socket
import stat
import sys
import termios
import time
import tty
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TextIO

from tapvirt.domains.errors import (
    CONSOLE_BUSY,
    CONSOLE_NOT_INTERACTIVE,
    CONSOLE_UNAVAILABLE,
    DOMAIN_NOT_RUNNING,
)
from tapvirt.domains.runtime import SHUTOFF, DomainDir, _flock_holder
from tapvirt.errors import TapvirtError

ESCAPE = 0x1D  # Ctrl+]
FORCE_WAIT_S = 3.0


class _Interrupted(Exception):
    """A signal that ends the session (SIGTERM, SIGHUP): unwinds through the restores."""


@dataclass(frozen=True)
class Endpoint:
    kind: str  # "pty" or "unix"
    path: str


def endpoint(name: str) -> Endpoint:
    """Where serial port 0 of the running guest NAME can be attached."""
    from tapvirt.conf.model import ChardevType
    from tapvirt.domains import api

    st = api.state_of(name)
    if st.state == SHUTOFF:
        raise TapvirtError(DOMAIN_NOT_RUNNING, f"domain {name}", "it is not running",
                           f"start it: tapvirt start {name}")
    dd = api._runtime(name)
    dom = api._domain_for(name, st, dd)
    serials = sorted(dom.devices.serials, key=lambda s: s.port)
    s0 = serials[0] if serials and serials[0].port == 0 else None
    if s0 is not None and s0.type is ChardevType.PTY:
        # QEMU knows the pty it made now (a restart makes a new one); the live XML is
        # the fallback when QMP is busy
        with contextlib.suppress(TapvirtError, OSError):
            found = api.pty_paths(dd.qmp_socket, f"domain {name}").get("charserial0")
            if found:
                return Endpoint("pty", found)
        if s0.path:
            return Endpoint("pty", s0.path)
        raise TapvirtError(CONSOLE_UNAVAILABLE, f"domain {name} serial0",
                           "QEMU did not say which pty it opened",
                           f"see `tapvirt dumpxml {name}`; retry when QMP answers")
    if s0 is not None and s0.type is ChardevType.UNIX and s0.listen and s0.path:
        return Endpoint("unix", s0.path)
    what = f"a '{s0.type}' serial port" if s0 is not None else "no serial port 0"
    raise TapvirtError(
        CONSOLE_NOT_INTERACTIVE, f"domain {name} serial0",
        f"it has {what}: there is nothing to type into",
        f"read the log with `tapvirt console {name} --log`, or give the domain "
        "<serial type='pty'/> (or a unix socket with mode='bind') and restart it")


def _holder_pid(fd: int) -> int | None:
    info = os.fstat(fd)
    return _flock_holder(info.st_dev, info.st_ino)


@contextlib.contextmanager
def console_lock(dd: DomainDir, name: str, *, force: bool) -> Iterator[None]:
    """Hold NAME/console.lock while attached; `force` takes it from its holder."""
    path = dd.path / "console.lock"
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder_pid(fd)
            who = f" (pid {holder})" if holder else ""
            if not force:
                raise TapvirtError(
                    CONSOLE_BUSY, f"domain {name}",
                    f"another console{who} is attached to its serial port",
                    f"detach that one with Ctrl+], or take over: tapvirt console {name} "
                    "--force") from None
            _take_over(fd, holder, name)
        yield
    finally:
        os.close(fd)  # releases the flock


def _take_over(fd: int, holder: int | None, name: str) -> None:
    if holder is not None and os.stat(f"/proc/{holder}").st_uid == os.getuid():
        with contextlib.suppress(ProcessLookupError):
            os.kill(holder, signal.SIGTERM)
    deadline = time.monotonic() + FORCE_WAIT_S
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            if time.monotonic() > deadline:
                raise TapvirtError(
                    CONSOLE_BUSY, f"domain {name}",
                    f"the attached console (pid {holder}) did not let go within "
                    f"{FORCE_WAIT_S:g} s", f"end it: kill {holder}" if holder
                    else "end the other `tapvirt console` of this domain") from None
            time.sleep(0.05)


def _open(ep: Endpoint, name: str) -> tuple[int, socket.socket | None]:
    subject = f"domain {name} serial0 ({ep.path})"
    try:
        if ep.kind == "unix":
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
            try:
                sock.connect(ep.path)
            except OSError:
                sock.close()
                raise
            return sock.fileno(), sock
        fd = os.open(ep.path, os.O_RDWR | os.O_NOCTTY | os.O_CLOEXEC)
        info = os.fstat(fd)
        if not stat.S_ISCHR(info.st_mode) or info.st_uid != os.getuid():
            os.close(fd)
            raise TapvirtError(CONSOLE_UNAVAILABLE, subject,
                               "it is not a pty of ours (stale path?)",
                               f"restart the guest: tapvirt destroy {name}; "
                               f"tapvirt start {name}")
        with contextlib.suppress(termios.error):
            tty.setraw(fd)  # bytes pass untouched (QEMU made it raw; keep it so)
        return fd, None
    except OSError as exc:
        raise TapvirtError(CONSOLE_UNAVAILABLE, subject, exc.strerror or str(exc),
                           f"check the guest still runs: tapvirt domstate {name}") from None


@contextlib.contextmanager
def raw_terminal(fd: int) -> Iterator[bool]:
    """Raw mode on a tty `fd` for the session; the saved modes come back on every exit."""
    if not os.isatty(fd):
        yield False
        return
    saved = termios.tcgetattr(fd)
    try:
        tty.setraw(fd, termios.TCSANOW)
        yield True
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)


@contextlib.contextmanager
def _ending_signals() -> Iterator[None]:
    def interrupted(signum: int, frame: object) -> None:
        raise _Interrupted(signal.Signals(signum).name)

    saved = {s: signal.signal(s, interrupted) for s in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for s, h in saved.items():
            signal.signal(s, h)


def _write_all(fd: int, data: bytes) -> None:
    while data:
        n = os.write(fd, data)
        data = data[n:]


def pump(guest: int, stdin: int, stdout: int, *, linger: float) -> str:
    """Copy stdin -> guest and guest -> stdout until a detach (Ctrl+]), the guest's end,
    or (stdin at its end) `linger` quiet seconds. Returns why it stopped."""
    watch_stdin = True
    quiet_until: float | None = None
    while True:
        fds = [guest] + ([stdin] if watch_stdin else [])
        timeout = None if quiet_until is None else max(0.0, quiet_until - time.monotonic())
        ready, _, _ = select.select(fds, [], [], timeout)
        if not ready:
            return "input ended"
        if guest in ready:
            try:
                data = os.read(guest, 65536)
            except OSError as exc:
                if exc.errno == errno.EIO:  # pty: QEMU closed it
                    return "guest console closed"
                raise
            if not data:
                return "guest console closed"
            _write_all(stdout, data)
            if quiet_until is not None:
                quiet_until = time.monotonic() + linger
        if watch_stdin and stdin in ready:
            data = os.read(stdin, 4096)
            if not data:
                watch_stdin = False
                quiet_until = time.monotonic() + linger
                continue
            cut = data.find(ESCAPE)
            if cut >= 0:
                _write_all(guest, data[:cut])
                return "detached"
            _write_all(guest, data)


def attach(name: str, *, force: bool = False, stdin: int = 0, stdout: int = 1,
           messages: TextIO | None = None, linger: float = 1.0) -> str:
    """An interactive console session on the running guest NAME; returns why it ended."""
    from tapvirt.domains import api

    out = messages or sys.stderr
    ep = endpoint(name)
    dd = api._runtime(name)
    with console_lock(dd, name, force=force):
        guest, sock = _open(ep, name)
        try:
            with _ending_signals(), raw_terminal(stdin) as is_tty:
                eol = "\r\n" if is_tty else "\n"
                out.write(f"Connected to domain '{name}'{eol}Escape character is ^] "
                          f"(Ctrl + ]){eol}")
                out.flush()
                try:
                    why = pump(guest, stdin, stdout, linger=linger)
                except _Interrupted as sig:
                    why = f"{sig} received"
                out.write(eol if why == "detached" else f"{eol}{why}{eol}")
                out.flush()
                return why
        finally:
            if sock is not None:
                sock.close()
            else:
                os.close(guest)
