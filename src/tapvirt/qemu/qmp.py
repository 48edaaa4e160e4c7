"""A small blocking QMP client (stdlib only) with fd passing.

Why not `qemu.qmp`: it is asyncio-based (44 ms import), alpha, and reaches into a
private socket attribute for fd passing. The launcher and the per-guest supervisor
need a handful of synchronous commands, and the supervisor must stay small.

Protocol facts relied on (QEMU 7.2): the server greets with one `{"QMP": ...}` line;
`qmp_capabilities` leaves negotiation mode; every message is one JSON object ending
in CRLF; replies carry our `id`; events may arrive between them at any time. An fd
rides along with the bytes of the command that uses it (`getfd`), via SCM_RIGHTS on
the same sendmsg, so no separate dummy byte is needed. `getfd` names are consumed by
the first `netdev_add` that uses them.
"""

from __future__ import annotations

import collections
import json
import os
import socket
import time
from collections.abc import Sequence
from typing import Any

from tapvirt.domains.errors import QMP_COMMAND_FAILED, QMP_TIMEOUT, QMP_UNAVAILABLE
from tapvirt.errors import TapvirtError

DEFAULT_TIMEOUT = 10.0


class QmpClient:
    """One QMP session on a connected unix socket. Not thread-safe."""

    def __init__(self, sock: socket.socket, *, subject: str = "qmp",
                 timeout: float = DEFAULT_TIMEOUT) -> None:
        self._sock = sock
        self._buf = b""
        self._next_id = 0
        self.subject = subject
        self.timeout = timeout
        self.events: collections.deque[dict[str, Any]] = collections.deque()
        self.greeting: dict[str, Any] = {}

    # -- connection -----------------------------------------------------------------

    @classmethod
    def connect(cls, path: str, *, subject: str | None = None,
                timeout: float = DEFAULT_TIMEOUT) -> QmpClient:
        """Connect, read the greeting and negotiate capabilities."""
        subject = subject or path
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        try:
            sock.settimeout(timeout)
            sock.connect(path)
        except OSError as exc:
            sock.close()
            raise TapvirtError(
                QMP_UNAVAILABLE, subject, f"cannot connect to QMP socket {path}: "
                f"{exc.strerror or exc}", "check that the guest is running: tapvirt list --all",
            ) from None
        client = cls(sock, subject=subject, timeout=timeout)
        try:
            greeting = client._read_message(time.monotonic() + timeout)
            if "QMP" not in greeting:
                raise TapvirtError(QMP_UNAVAILABLE, subject,
                                   f"unexpected QMP greeting {greeting!r}")
            client.greeting = greeting["QMP"]
            client.execute("qmp_capabilities")
        except BaseException:
            client.close()
            raise
        return client

    def close(self) -> None:
        self._sock.close()

    def __enter__(self) -> QmpClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def fileno(self) -> int:
        return self._sock.fileno()

    # -- commands -------------------------------------------------------------------

    def execute(self, command: str, arguments: dict[str, Any] | None = None, *,
                fds: Sequence[int] = (), timeout: float | None = None) -> Any:
        """Run one command and return its `return` value; QMP errors raise TapvirtError.

        `fds` travel with the command's bytes (SCM_RIGHTS); they stay owned by the
        caller, who closes them afterwards."""
        self._next_id += 1
        ident = f"tv{self._next_id}"
        msg: dict[str, Any] = {"execute": command, "id": ident}
        if arguments:
            msg["arguments"] = arguments
        data = json.dumps(msg).encode() + b"\n"
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        try:
            self._sock.settimeout(max(0.001, deadline - time.monotonic()))
            if fds:
                sent = socket.send_fds(self._sock, [data], list(fds))
                if sent < len(data):
                    self._sock.sendall(data[sent:])
            else:
                self._sock.sendall(data)
        except TimeoutError:
            raise self._timeout(command) from None
        except OSError as exc:
            raise TapvirtError(
                QMP_UNAVAILABLE, self.subject,
                f"QMP connection lost while sending {command}: {exc.strerror or exc}",
                "QEMU has probably exited; see the guest's log (tapvirt dominfo)",
            ) from None
        while True:
            reply = self._read_message(deadline, command)
            if "event" in reply:
                self.events.append(reply)
                continue
            if reply.get("id") != ident:
                continue  # a late reply to a command that timed out earlier
            if "error" in reply:
                err = reply["error"]
                raise TapvirtError(
                    QMP_COMMAND_FAILED, self.subject,
                    f"QEMU refused {command}: {err.get('class', 'Error')}: "
                    f"{err.get('desc', '')}",
                    details={"command": command, "arguments": arguments or {},
                             "class": err.get("class", ""), "desc": err.get("desc", "")},
                )
            return reply.get("return")

    def send_fd(self, name: str, fd: int) -> None:
        """Hand QEMU a copy of `fd` under `name` (getfd). The caller keeps and closes fd."""
        self.execute("getfd", {"fdname": name}, fds=[fd])

    def close_fd(self, name: str) -> None:
        self.execute("closefd", {"fdname": name})

    def status(self) -> str:
        """The VM run state: 'running', 'prelaunch', 'paused', 'shutdown', ..."""
        return str(self.execute("query-status")["status"])

    # -- events ---------------------------------------------------------------------

    def wait_event(self, name: str, timeout: float) -> dict[str, Any] | None:
        """The next event called `name` (earlier queued ones first), or None on timeout."""
        for ev in list(self.events):
            if ev.get("event") == name:
                self.events.remove(ev)
                return ev
        deadline = time.monotonic() + timeout
        while True:
            try:
                msg = self._read_message(deadline, f"event {name}")
            except TapvirtError as err:
                if err.code is QMP_TIMEOUT:
                    return None
                raise
            if msg.get("event") == name:
                return msg
            if "event" in msg:
                self.events.append(msg)

    def read_events(self) -> list[dict[str, Any]]:
        """The events queued or readable now (one read; call when select says readable).
        QMP_UNAVAILABLE when QEMU closed the connection."""
        out = list(self.events)
        self.events.clear()
        out.append(self._read_message(time.monotonic() + 1.0, "an event"))
        while b"\n" in self._buf:
            out.append(self._read_message(time.monotonic() + 1.0, "an event"))
        return [m for m in out if "event" in m]

    # -- wire -----------------------------------------------------------------------

    def _timeout(self, what: str) -> TapvirtError:
        return TapvirtError(
            QMP_TIMEOUT, self.subject, f"QEMU did not answer {what} in time",
            "QEMU may be stuck; tapvirt destroy stops it",
        )

    def _read_message(self, deadline: float, what: str = "the greeting") -> dict[str, Any]:
        while b"\n" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise self._timeout(what)
            self._sock.settimeout(left)
            try:
                chunk = self._sock.recv(65536)
            except TimeoutError:
                raise self._timeout(what) from None
            except OSError as exc:
                chunk = b""
                if exc.errno not in (None, 104):  # ECONNRESET is just "closed"
                    raise TapvirtError(QMP_UNAVAILABLE, self.subject,
                                       f"QMP read failed: {os.strerror(exc.errno or 0)}"
                                       ) from None
            if not chunk:
                raise TapvirtError(
                    QMP_UNAVAILABLE, self.subject,
                    f"QEMU closed the QMP connection while waiting for {what}",
                    "QEMU has probably exited; see the guest's log (tapvirt dominfo)",
                )
            self._buf += chunk
        line, self._buf = self._buf.split(b"\n", 1)
        try:
            msg = json.loads(line)
        except ValueError:
            raise TapvirtError(QMP_UNAVAILABLE, self.subject,
                               f"QEMU sent a line that is not JSON: {line[:80]!r}") from None
        if not isinstance(msg, dict):
            raise TapvirtError(QMP_UNAVAILABLE, self.subject, f"unexpected QMP message {msg!r}")
        return msg
