"""The supervisor's control channel: how verbs change a running guest.

The supervisor is the only writer of a running guest's state. A verb that changes a
running guest (hotplug, link state, pause, reboot) or reads from QEMU (statistics) sends
the supervisor ONE request on its control socket (RUNTIME/NAME/control.sock, 0600 in the
private domain directory):

    {"op": "transaction",
     "steps": [STEP, ...],          QMP commands run in order on a fresh QMP connection
     "commit": {...}}               the state change to record if every step succeeded
    + the fds the steps hand to QEMU (SCM_RIGHTS; a STEP names one by index)

    STEP = {"execute": CMD, "arguments": {...}, "fd": I,     run CMD (with fd I attached)
            "undo": {"execute": ..., "arguments": ...},       how to take it back
            "tolerate": {"QEMU error class": N},             not an error: skip N steps
            "error": {"code", "subject", "cause", "fix"},    what a refusal means
            "timeout": S}
         | {"wait_event": "DEVICE_DELETED", "match": {"device": "net1"}, "timeout": S,
            "error": {...}}                                  no such event in S: error

The supervisor serves one request at a time, so two verbs never interleave their QMP
commands, and a request arriving while QEMU is gone is refused. When a step fails, the
undo commands of the steps done so far run in reverse order; whatever happens, the
supervisor closes every fd it received (QEMU has its own copies of those it took), and
records nothing unless all steps succeeded. The reply is one JSON line:
{"ok": true, "results": [...]} or {"ok": false, "error": {...}}.

Stdlib only: the supervisor imports this.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tapvirt.domains.live_errors import CONTROL_FAILED
from tapvirt.errors import TapvirtError

if TYPE_CHECKING:
    from tapvirt.domains.runtime import DomainDir, State
    from tapvirt.qemu.qmp import QmpClient

MAX_REQUEST = 4 << 20  # bytes: a live XML plus a few steps fit many times over
MAX_FDS = 1024  # a NIC has at most 256 queues
FDS_PER_MESSAGE = 250  # SCM_RIGHTS carries at most 253 fds per message
READ_TIMEOUT = 5.0  # a client must send its request within this time


def control_socket(dd: DomainDir) -> Path:
    path = dd.path / "control.sock"
    if len(str(path).encode()) > 100:  # sun_path holds 108 bytes
        return dd.qmp_socket.with_suffix(".ctl")
    return path


# -- client -------------------------------------------------------------------------------

def request(dd: DomainDir, req: dict[str, Any], fds: list[int] | None = None, *,
            timeout: float = 60.0) -> dict[str, Any]:
    """Send one request to the domain's supervisor and return its reply. The caller
    keeps and closes `fds` (the supervisor receives copies)."""
    path = control_socket(dd)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    subject = f"domain {dd.name}"
    try:
        sock.settimeout(5.0)
        try:
            sock.connect(str(path))
        except OSError as exc:
            raise TapvirtError(
                CONTROL_FAILED, subject,
                f"cannot reach the supervisor at {path}: {exc.strerror or exc}",
                f"the guest may have just stopped: tapvirt domstate {dd.name}") from None
        data = json.dumps(req).encode()
        fds = list(fds or [])
        try:
            chunks = [fds[i:i + FDS_PER_MESSAGE] for i in range(0, len(fds), FDS_PER_MESSAGE)]
            first = chunks.pop(0) if chunks else []
            sent = socket.send_fds(sock, [data], first) if first else sock.send(data)
            if sent < len(data):
                sock.sendall(data[sent:])
            for batch in chunks:  # JSON ignores trailing blanks: one per extra batch
                socket.send_fds(sock, [b" "], batch)
            sock.shutdown(socket.SHUT_WR)
        except OSError as exc:
            raise TapvirtError(CONTROL_FAILED, subject,
                               f"the supervisor did not take the request: {exc}") from None
        buf = b""
        deadline = time.monotonic() + timeout
        while b"\n" not in buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TapvirtError(CONTROL_FAILED, subject,
                                   f"the supervisor did not answer within {timeout:g} s",
                                   f"see {dd.supervisor_log}")
            sock.settimeout(left)
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                continue
            if not chunk:
                raise TapvirtError(
                    CONTROL_FAILED, subject, "the supervisor closed the connection without "
                    "answering (the guest stopped meanwhile?)",
                    f"see tapvirt domstate {dd.name} and {dd.supervisor_log}")
            buf += chunk
        reply: dict[str, Any] = json.loads(buf.split(b"\n", 1)[0])
        return reply
    finally:
        sock.close()


# -- server (in the supervisor) ----------------------------------------------------------

class ControlServer:
    """The listening socket; `accept()` returns one client's request and its fds."""

    def __init__(self, path: Path) -> None:
        self.path = path
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        try:
            old = os.umask(0o177)  # the socket is born 0600, never briefly wider
            try:
                sock.bind(str(path))
            finally:
                os.umask(old)
            sock.listen(8)
            sock.setblocking(False)
        except BaseException:
            sock.close()
            raise
        self.sock = sock

    def fileno(self) -> int:
        return self.sock.fileno()

    def close(self) -> None:
        self.sock.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)

    def accept(self) -> tuple[socket.socket, dict[str, Any] | None, list[int]] | None:
        """One waiting client: (connection, request or None if malformed, fds)."""
        try:
            conn, _ = self.sock.accept()
        except (BlockingIOError, InterruptedError):
            return None
        conn.setblocking(True)
        conn.settimeout(READ_TIMEOUT)
        fds: list[int] = []
        chunks: list[bytes] = []
        size = 0
        try:
            while True:
                data, got, _, _ = socket.recv_fds(conn, 1 << 16, FDS_PER_MESSAGE + 3,
                                                  socket.MSG_CMSG_CLOEXEC)
                fds += got
                if not data:
                    break
                size += len(data)
                chunks.append(data)
                if size > MAX_REQUEST or len(fds) > MAX_FDS:
                    raise ValueError("request too large")
            req = json.loads(b"".join(chunks))
            if not isinstance(req, dict):
                raise ValueError("not an object")
            return conn, req, fds
        except (OSError, ValueError):
            return conn, None, fds

    @staticmethod
    def answer(conn: socket.socket, reply: dict[str, Any]) -> None:
        with contextlib.suppress(OSError):  # the client may be gone: the change stands
            conn.settimeout(READ_TIMEOUT)
            conn.sendall(json.dumps(reply).encode() + b"\n")
        conn.close()


def apply_commit(dd: DomainDir, state: State, change: dict[str, Any]) -> str | None:
    """Record in `state` (and on disk) what a successful live change did (the verb
    computed it): by the supervisor, or by the verb itself for a guest without one
    (tapvirt.domains.direct). Returns the line to log, if any. `reboot` is the
    supervisor's own business (it restarts QEMU) and not handled here."""
    from tapvirt.domains.runtime import IfaceState, write_atomic

    if not change:
        return None
    if "interfaces" in change:
        state.interfaces = [IfaceState(**i) for i in change["interfaces"]]
    if "to_delete" in change:
        state.to_delete = [str(d) for d in change["to_delete"]]
    if "state" in change:
        state.state = str(change["state"])
        state.reason = str(change.get("reason", ""))
    for warning in change.get("warnings_add") or []:
        if warning not in state.warnings:
            state.warnings.append(warning)
    if isinstance(change.get("live_xml"), str):
        write_atomic(dd.domain_xml, change["live_xml"])
    dd.write(state)
    return str(change["log"]) if change.get("log") else None


class StepFailed(Exception):
    def __init__(self, error: dict[str, Any], index: int) -> None:
        super().__init__(error.get("cause", ""))
        self.error = error
        self.index = index


def run_steps(qmp: QmpClient, steps: list[dict[str, Any]], fds: list[int],
              log: Any = None) -> list[Any]:
    """Run the steps; on a failure undo the done ones (reverse order) and raise
    StepFailed with the error to report."""
    results: list[Any] = []
    done: list[dict[str, Any]] = []
    skip = 0
    for index, step in enumerate(steps):
        if skip:
            skip -= 1
            results.append(None)
            continue
        try:
            if "wait_event" in step:
                results.append(_wait_event(qmp, step))
            else:
                fd = step.get("fd")
                results.append(qmp.execute(
                    str(step["execute"]), step.get("arguments"),
                    fds=[fds[fd]] if isinstance(fd, int) else (),
                    timeout=float(step.get("timeout", 10.0))))
                done.append(step)
        except TapvirtError as err:
            klass = str(err.details.get("class", ""))
            tolerated = (step.get("tolerate") or {}).get(klass)
            if tolerated is not None:
                skip = int(tolerated)
                results.append(None)
                continue
            lost = err.code.code in ("qmp-unavailable",)
            if not lost:
                _undo(qmp, done, log)
            raise StepFailed(_error_for(step, err), index) from None
    return results


def _wait_event(qmp: QmpClient, step: dict[str, Any]) -> dict[str, Any]:
    name = str(step["wait_event"])
    match = dict(step.get("match") or {})
    timeout = float(step.get("timeout", 10.0))
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        ev = qmp.wait_event(name, max(0.0, left)) if left > 0 else None
        if ev is None:
            tmpl = step.get("error") or {}
            raise TapvirtError(CONTROL_FAILED, tmpl.get("subject", qmp.subject),
                               tmpl.get("cause", f"no {name} event within {timeout:g} s"),
                               tmpl.get("fix", ""), details={"timeout": True})
        data = ev.get("data") or {}
        if all(data.get(k) == v for k, v in match.items()):
            return dict(ev)


def _undo(qmp: QmpClient, done: list[dict[str, Any]], log: Any) -> None:
    for step in reversed(done):
        undo = step.get("undo")
        if not undo:
            continue
        try:
            qmp.execute(str(undo["execute"]), undo.get("arguments"), timeout=10.0)
        except TapvirtError as err:
            if log is not None and not undo.get("quiet"):
                log(f"undo {undo['execute']} failed: {err.cause}")
            if err.code.code == "qmp-unavailable":
                return


def _error_for(step: dict[str, Any], err: TapvirtError) -> dict[str, Any]:
    """The error a user sees: the step's own meaning of a refusal, with QEMU's words."""
    tmpl = step.get("error")
    if not tmpl:
        return err.to_json()
    desc = err.details.get("desc") or err.cause
    if err.details.get("timeout"):
        desc = ""
    elif err.code.code != "qmp-command-failed":
        return err.to_json()  # QEMU went away or did not answer: say that, not the template
    out = dict(tmpl)
    out["cause"] = tmpl.get("cause", "") + (f": {desc}" if desc else "")
    out.setdefault("details", {})
    return out
