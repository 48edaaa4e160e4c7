"""How the supervisor names QEMU's end when events said why (a guest panic, a watchdog
power-off) and which lifecycle action then applies (Supervisor.classify)."""

from __future__ import annotations

from typing import Any

from tapvirt.domains.events import Pending
from tapvirt.domains.supervisor import Supervisor


class _Follower:
    def __init__(self, pending: Pending) -> None:
        self.pending = pending


def _classify(status: int, pending: Pending, *, follower: bool = True, **job: Any
              ) -> tuple[str, str]:
    sup = Supervisor.__new__(Supervisor)  # classify needs only these
    sup.job = {"on_poweroff": "destroy", "on_crash": "destroy", **job}
    sup.destroy_requested = sup.shutdown_requested = sup.reboot_requested = False
    sup.follower = _Follower(pending) if follower else None  # type: ignore[assignment]
    sup.last_events = Pending() if follower else pending
    return sup.classify(status)


def test_a_panic_is_a_crash_and_on_crash_applies() -> None:
    assert _classify(1, Pending(panicked=True)) == ("crashed", "destroy")
    assert _classify(1, Pending(panicked=True), on_crash="restart") == ("crashed", "restart")
    # the follower already closed at EOF: its events were kept for classify
    assert _classify(1, Pending(panicked=True), follower=False, on_crash="restart") == (
        "crashed", "restart")


def test_a_watchdog_poweroff_is_a_crash_without_lifecycle_action() -> None:
    # QEMU exits 0 (no SHUTDOWN event): libvirt says shut off (crashed), and restarts nothing
    assert _classify(0, Pending(watchdog="poweroff"), on_poweroff="restart") == (
        "crashed", "stop")
    # a watchdog that pressed the power button: an ordinary guest power-off
    assert _classify(0, Pending(watchdog="shutdown"), on_poweroff="restart") == (
        "shutdown", "restart")


def test_without_events_the_exit_status_decides_as_before() -> None:
    assert _classify(0, Pending()) == ("shutdown", "destroy")
    assert _classify(9, Pending(), on_crash="restart") == ("crashed", "restart")


def test_each_qemu_starts_with_no_remembered_events() -> None:
    sup = Supervisor.__new__(Supervisor)
    sup.job = {"on_crash": "restart"}
    sup.destroy_requested = sup.shutdown_requested = sup.reboot_requested = False
    sup.follower = None
    sup.last_events = Pending(panicked=True)
    assert sup.classify(1) == ("crashed", "restart")
    assert sup.classify(0) == ("shutdown", "destroy")  # the restarted QEMU's own end
