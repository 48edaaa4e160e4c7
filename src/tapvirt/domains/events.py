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
    RESET, SHUTDOWN, DEVICE_DELETED, NIC_RX_FILTER_CHANGED: recorded in the log only
              (QEMU's exit is classified by the supervisor as before; a hotplug's
              DEVICE_DELETED is consumed by its own transaction). GUEST_PANICKED is
              h-tpm's (panic states) and only logged here.

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


def apply(state: Any, ev: dict[str, Any], pending: Pending) -> tuple[bool, str | None]:
    """Change `state` (a runtime State) for event `ev`: (changed, a log line or None)."""
    name = str(ev.get("event", ""))
    data = ev.get("data") or {}
    if name == "BLOCK_IO_ERROR" and data.get("action") == "stop":
        pending.reason = "ioerror"
        return False, f"event {name}: {data.get('device') or data.get('node-name')}"
    if name == "WATCHDOG" and data.get("action") == "pause":
        pending.reason = "watchdog"
        return False, f"event {name}: pause"
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
    if name in ("RESET", "SHUTDOWN", "DEVICE_DELETED", "NIC_RX_FILTER_CHANGED",
                "GUEST_PANICKED"):
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
