"""The supervisor follows QEMU's events, so that a running guest's state stays true when
the guest or a monitor command changes it (issue 12): a second QMP monitor, for events
only, that the supervisor keeps connected while QEMU runs (the first one serves one
transaction at a time on fresh connections, tapvirt.domains.control).

    -chardev socket,id=charevents,path=QMP_SOCKET.ev,server=on,wait=off
    -mon chardev=charevents,id=events,mode=control

What an event changes (`apply`, pure; libvirt's qemuProcessHandleStop/Resume):
    STOP      running -> paused; the reason is the one a preceding event gave
              (BLOCK_IO_ERROR with action stop: ioerror; WATCHDOG pause: watchdog),
              else "unknown" (e.g. `qemu-monitor-command ... stop`). A verb's own
              `suspend` commits paused/user before the event is read: it is kept.
    RESUME    paused -> running, reason unpaused (a verb's `resume` already did it).
    GUEST_PANICKED  a <panic> device reported a guest panic. Action pause (QEMU runs with
              -action panic=pause for <on_crash>preserve): -> crashed, reason panicked,
              like libvirt. Action poweroff: QEMU exits (exit-failure); remembered, so that
              the supervisor says why and applies on_crash.
    WATCHDOG  the <watchdog> fired: logged with its action; pause marks the next STOP
              (paused, reason watchdog); poweroff is remembered: QEMU exits 0 without a
              SHUTDOWN event, which libvirt reports as shut off (crashed).
    RESET, SHUTDOWN, DEVICE_DELETED, NIC_RX_FILTER_CHANGED: recorded in the log only
              (QEMU's exit is classified by the supervisor as before; a hotplug's
              DEVICE_DELETED is consumed by its own transaction).

Stdlib only: the supervisor imports this.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from typing import Any

from tapvirt.errors import TapvirtError
from tapvirt.qemu.qmp import QmpClient


def socket_of(qmp_socket: str) -> str:
    """Next to the QMP socket (whose path is kept short enough for sun_path)."""
    return qmp_socket + ".ev"


def monitor_args(qmp_socket: str) -> list[str]:
    path = socket_of(qmp_socket).replace(",", ",,")
    return ["-chardev", f"socket,id=charevents,path={path},server=on,wait=off",
            "-mon", "chardev=charevents,id=events,mode=control"]


@dataclass
class Pending:
    """What earlier events said about the next STOP."""

    reason: str | None = None
    panicked: bool = False  # a GUEST_PANICKED came: QEMU's exit is the guest's crash
    watchdog: str | None = None  # the action of the last WATCHDOG event


def apply(state: Any, ev: dict[str, Any], pending: Pending) -> tuple[bool, str | None]:
    """Change `state` (a runtime State) for event `ev`: (changed, a log line or None)."""
    name = str(ev.get("event", ""))
    data = ev.get("data") or {}
    if name == "BLOCK_IO_ERROR" and data.get("action") == "stop":
        pending.reason = "ioerror"
        return False, f"event {name}: {data.get('device') or data.get('node-name')}"
    if name == "WATCHDOG":
        pending.watchdog = str(data.get("action", ""))
        if pending.watchdog == "pause":
            pending.reason = "watchdog"
        return False, f"event {name}: the guest's watchdog fired, action {pending.watchdog}"
    if name == "GUEST_PANICKED":
        pending.panicked = True
        action = str(data.get("action", ""))
        info = data.get("info") or {}
        detail = ", ".join(f"{k}={v}" for k, v in sorted(info.items()))
        line = f"event {name}: the guest panicked (action {action}" + (
            f"; {detail})" if detail else ")")
        if action == "pause" and state.state in ("running", "paused"):
            state.state, state.reason = "crashed", "panicked"
            return True, line + ": crashed (panicked), kept for inspection"
        return False, line
    if name == "STOP":
        reason, pending.reason = pending.reason, None
        if state.state == "running":
            state.state, state.reason = "paused", reason or "unknown"
            return True, f"event STOP: paused ({state.reason})"
        return False, None
    if name == "RESUME":
        pending.reason = None
        if state.state == "paused":
            state.state, state.reason = "running", "unpaused"
            return True, "event RESUME: running (unpaused)"
        return False, None
    if name in ("RESET", "SHUTDOWN", "DEVICE_DELETED", "NIC_RX_FILTER_CHANGED"):
        detail = ", ".join(f"{k}={v}" for k, v in sorted(data.items()) if k != "path")
        return False, f"event {name}" + (f": {detail}" if detail else "")
    return False, None


class Follower:
    """The events monitor's connection; `fileno` for the supervisor's select."""

    def __init__(self, qmp_socket: str, subject: str) -> None:
        path = socket_of(qmp_socket)
        self.client = QmpClient.connect(path, subject=f"{subject} (events)", timeout=5)
        with contextlib.suppress(OSError):
            os.chmod(path, 0o600)
        self.pending = Pending()

    def fileno(self) -> int:
        return self.client.fileno()

    def read(self) -> list[dict[str, Any]] | None:
        """The events that arrived (select said readable); None when QEMU closed it."""
        try:
            return self.client.read_events()
        except TapvirtError:
            return None

    def close(self) -> None:
        self.client.close()
