"""End to end: `tapvirt console NAME` as the unprivileged user, driven under a real pty
(issue 10, test 3): type into the guest's shell, read the output, detach with Ctrl+];
the guest keeps running, the terminal's modes come back, the console log kept recording.
A second console is refused by name (`console-busy`) unless `--force`, which takes over;
a unix-socket serial works the same way from a script (non-tty stdin)."""

from __future__ import annotations

import os
import select
import shutil
import subprocess
import termios
import time
from collections.abc import Iterator

import pytest

from tests.e2e.lab import Lab, module_lab, wait_until
from tests.support.sandbox import unprivileged_python

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(shutil.which("qemu-system-x86_64") is None,
                       reason="qemu-system-x86_64 is not installed"),
]

SHELL_READY = r"job control turned off"


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    yield from module_lab()


def _domain(lab: Lab, name: str, serial: str = "") -> None:
    iface = (f"    <interface type='ethernet'><target dev='{lab.tap()}' managed='no'/>"
             "<model type='virtio'/></interface>")
    xml = lab.domain_xml(name, iface + serial, lab.image.cmdline(console_shell=True))
    lab.define(name, xml)
    lab.tv("start", name)


def _console_argv(lab: Lab, *args: str) -> list[str]:
    return lab.as_user.argv([unprivileged_python(), "-m", "tapvirt.cli.main", "console",
                             *args])


def _read_until(fd: int, needle: bytes, timeout: float) -> bytes:
    seen = b""
    deadline = time.monotonic() + timeout
    while needle not in seen:
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError(f"no {needle!r} within {timeout} s; got {seen[-1500:]!r}")
        ready, _, _ = select.select([fd], [], [], left)
        if ready:
            try:
                chunk = os.read(fd, 65536)
            except OSError:
                chunk = b""
            if not chunk:
                raise AssertionError(f"EOF before {needle!r}; got {seen[-1500:]!r}")
            seen += chunk
    return seen


class PtySession:
    """`tapvirt console` with a pty as its terminal; the test holds the master."""

    def __init__(self, argv: list[str]) -> None:
        self.master, self.slave = os.openpty()
        self.modes = termios.tcgetattr(self.slave)
        self.proc = subprocess.Popen(argv, stdin=self.slave, stdout=self.slave,
                                     stderr=self.slave, start_new_session=True)

    def type(self, data: bytes) -> None:
        os.write(self.master, data)

    def read_until(self, needle: bytes, timeout: float = 60) -> bytes:
        return _read_until(self.master, needle, timeout)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        os.close(self.master)
        os.close(self.slave)


def test_interactive_console_under_a_pty(lab: Lab) -> None:
    name = "tv-con"
    _domain(lab, name)
    lab.wait_console(name, SHELL_READY, timeout=180)
    live = lab.tv("dumpxml", name).stdout
    assert "<serial type='pty'>" in live and "<source path='/dev/pts/" in live, live

    s = PtySession(_console_argv(lab, name))
    try:
        s.read_until(b"Escape character is ^]")
        # raw mode while attached: no local echo, no line editing
        assert not termios.tcgetattr(s.slave)[3] & termios.ECHO
        s.type(b"echo tv-$((6*7))\r")
        out = s.read_until(b"tv-42", timeout=60)
        assert b"tv-42" in out

        # a second console is refused by name while this one is attached
        second = subprocess.run(_console_argv(lab, name), check=False, stdin=subprocess.DEVNULL,
                                capture_output=True, text=True, timeout=60)
        assert second.returncode == 1, second
        assert "error[console-busy]" in second.stderr and "--force" in second.stderr

        s.type(b"\x1d")  # Ctrl+]
        assert s.proc.wait(timeout=30) == 0
        assert termios.tcgetattr(s.slave) == s.modes, "terminal modes not restored"
    finally:
        s.close()
    assert lab.tv("domstate", name).stdout.strip() == "running"
    assert "tv-42" in lab.console(name), "the console log stopped recording"

    # --force takes the console over from an attached one, which restores its terminal
    first = PtySession(_console_argv(lab, name))
    try:
        first.read_until(b"Escape character is ^]")
        forced = subprocess.run(_console_argv(lab, name, "--force"), check=False,
                                input=b"echo forced-$((2+3))\n", capture_output=True,
                                timeout=90)
        assert forced.returncode == 0, forced
        assert b"forced-5" in forced.stdout, forced.stdout[-1000:]
        assert first.proc.wait(timeout=30) == 0
        assert termios.tcgetattr(first.slave) == first.modes
    finally:
        first.close()
    assert lab.tv("domstate", name).stdout.strip() == "running"
    lab.tv("destroy", name)
    gone = lab.tv("console", name, check=False)
    assert gone.returncode == 1 and "error[domain-not-running]" in gone.stderr


def test_unix_socket_serial_from_a_script(lab: Lab) -> None:
    name = "tv-conu"
    sock = lab.user.home / "tv-conu.sock"
    serial = (f"\n    <serial type='unix'><source mode='bind' path='{sock}'/>"
              "</serial>")
    _domain(lab, name, serial)
    # the console log records a socket serial too (QEMU's logfile=)
    lab.wait_console(name, SHELL_READY, timeout=180)
    proc = subprocess.run(_console_argv(lab, name), check=False, input=b"echo sock-$((3*4))\n",
                          capture_output=True, timeout=90)
    assert proc.returncode == 0, proc
    assert b"sock-12" in proc.stdout, proc.stdout[-1000:]
    assert wait_until(lambda: "sock-12" in lab.console(name), 10)
    assert lab.tv("domstate", name).stdout.strip() == "running"
    lab.tv("destroy", name)


def test_file_serial_is_not_interactive(lab: Lab) -> None:
    name = "tv-conf"
    log = lab.user.home / "tv-conf.log"
    _domain(lab, name, f"\n    <serial type='file'><source path='{log}'/></serial>")
    try:
        proc = lab.tv("console", name, check=False)
        assert proc.returncode == 1
        assert "error[console-not-interactive]" in proc.stderr
        assert "--log" in proc.stderr
    finally:
        lab.tv("destroy", name)
