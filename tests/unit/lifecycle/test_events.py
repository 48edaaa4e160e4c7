"""What QEMU's events do to a running guest's state (tapvirt.domains.events.apply)."""

from __future__ import annotations

from dataclasses import dataclass

from tapvirt.domains.events import Pending, apply, monitor_args


@dataclass
class S:
    state: str = "running"
    reason: str = "booted"


def test_stop_and_resume_behind_tapvirts_back() -> None:
    s, p = S(), Pending()
    assert apply(s, {"event": "STOP"}, p) == (True, "event STOP: paused (unknown)")
    assert (s.state, s.reason) == ("paused", "unknown")
    assert apply(s, {"event": "RESUME"}, p)[0]
    assert (s.state, s.reason) == ("running", "unpaused")


def test_a_verbs_own_suspend_keeps_its_reason() -> None:
    s = S("paused", "user")  # committed by `suspend` before the event is read
    assert apply(s, {"event": "STOP"}, Pending()) == (False, None)
    assert s.reason == "user"


def test_the_reason_comes_from_the_event_before_stop() -> None:
    s, p = S(), Pending()
    assert not apply(s, {"event": "BLOCK_IO_ERROR",
                         "data": {"device": "virtio-disk0", "action": "stop"}}, p)[0]
    apply(s, {"event": "STOP"}, p)
    assert (s.state, s.reason) == ("paused", "ioerror")
    s, p = S(), Pending()
    apply(s, {"event": "WATCHDOG", "data": {"action": "pause"}}, p)
    apply(s, {"event": "STOP"}, p)
    assert s.reason == "watchdog"
    apply(s, {"event": "RESUME"}, p)
    apply(s, {"event": "STOP"}, p)
    assert s.reason == "unknown"  # used once


def test_other_events_are_logged_only() -> None:
    s = S()
    assert apply(s, {"event": "RESET", "data": {"guest": True, "reason": "guest-reset"}},
                 Pending()) == (False, "event RESET: guest=True, reason=guest-reset")
    assert apply(s, {"event": "DEVICE_DELETED", "data": {"device": "net1", "path": "/x"}},
                 Pending()) == (False, "event DEVICE_DELETED: device=net1")
    assert apply(s, {"event": "VSERPORT_CHANGE"}, Pending()) == (False, None)
    assert (s.state, s.reason) == ("running", "booted")


def test_the_events_monitor_sits_next_to_the_qmp_socket() -> None:
    assert monitor_args("/run/u/tapvirt/g,1/qmp.sock") == [
        "-chardev", "socket,id=charevents,path=/run/u/tapvirt/g,,1/qmp.sock.ev,server=on,"
        "wait=off", "-mon", "chardev=charevents,id=events,mode=control"]
