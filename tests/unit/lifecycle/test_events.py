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


def test_a_panic_with_preserve_makes_the_guest_crashed_panicked() -> None:
    # QEMU runs with -action panic=pause: GUEST_PANICKED (action pause), then STOP
    s, p = S(), Pending()
    did, line = apply(s, {"event": "GUEST_PANICKED", "data": {
        "action": "pause", "info": {"type": "hyper-v", "arg1": 1}}}, p)
    assert did and (s.state, s.reason) == ("crashed", "panicked")
    assert line is not None and "panicked (action pause; arg1=1, type=hyper-v)" in line
    assert apply(s, {"event": "STOP"}, p) == (False, None)  # stays crashed
    assert (s.state, s.reason) == ("crashed", "panicked") and p.panicked


def test_a_panic_that_ends_qemu_is_remembered_for_the_supervisor() -> None:
    s, p = S(), Pending()
    did, line = apply(s, {"event": "GUEST_PANICKED", "data": {"action": "poweroff"}}, p)
    assert not did and (s.state, s.reason) == ("running", "booted")
    assert p.panicked and line == "event GUEST_PANICKED: the guest panicked (action poweroff)"


def test_every_watchdog_action_is_logged_and_remembered() -> None:
    for action in ("reset", "shutdown", "poweroff", "none", "inject-nmi", "pause"):
        s, p = S(), Pending()
        did, line = apply(s, {"event": "WATCHDOG", "data": {"action": action}}, p)
        assert not did and p.watchdog == action
        assert line == f"event WATCHDOG: the guest's watchdog fired, action {action}"
        assert p.reason == ("watchdog" if action == "pause" else None)
