"""End to end (issue 10): `<watchdog>` actions and `<panic>` with `<on_crash>`, in the
real test guest under TCG, as the unprivileged user on a precreated tap.

The guest really stops feeding an i6300esb (its /init arms the device through PCI config
space and /dev/mem: Debian's cloud kernel has no i6300esb driver) or really panics
(`echo c > /proc/sysrq-trigger`, reported to QEMU by the pvpanic driver). Checked as
`virsh domstate --reason` words: `paused (watchdog)`, `shut off (crashed)` after a
watchdog power-off, `crashed (panicked)` kept with `<on_crash>preserve`, `shut off
(crashed)` with destroy, a fresh boot with restart."""

from __future__ import annotations

import shutil
from collections.abc import Iterator

import pytest

from tests.e2e.lab import BRIDGE_IP, Lab, module_lab, wait_until

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(shutil.which("qemu-system-x86_64") is None,
                       reason="qemu-system-x86_64 is not installed"),
]

# name -> (device XML, <on_crash>, cmdline knobs)
CASES = {
    "tv-wdpause": ("<watchdog model='i6300esb' action='pause'/>", None, {"watchdog": 1}),
    "tv-wdoff": ("<watchdog model='i6300esb' action='poweroff'/>", None, {"watchdog": 1}),
    "tv-pnkeep": ("<panic model='isa'/>", "preserve", {"panic_after": 0.5}),
    "tv-pndestroy": ("<panic model='isa'/>", None, {"panic_after": 0.5}),
    "tv-pnrestart": ("<panic model='isa'/>", "restart", {"panic_after": 0.5}),
}


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    yield from module_lab()


@pytest.fixture(scope="module")
def started(lab: Lab) -> Iterator[Lab]:
    """All five guests booted together (each boot is a few seconds of TCG)."""
    for n, (name, (dev, on_crash, knobs)) in enumerate(CASES.items()):
        iface = (f"    <interface type='ethernet'>\n      <mac address='52:54:00:e2:30:{n:02x}'/>\n"
                 f"      <target dev='{lab.tap()}' managed='no'/>\n"
                 f"      <model type='virtio'/>\n    </interface>\n    {dev}")
        cmd = lab.image.cmdline(ip=f"{lab.next_ip()}/24", peer=BRIDGE_IP, **knobs)  # type: ignore[arg-type]
        extra = f"\n  <on_crash>{on_crash}</on_crash>" if on_crash else ""
        lab.define(name, lab.domain_xml(name, iface, cmd, extra=extra))
        lab.tv("start", name)
    yield lab
    for name in CASES:
        lab.tv("destroy", name, check=False)


def _reason(lab: Lab, name: str) -> str:
    return lab.tv("domstate", name, "--reason").stdout.strip()


def _wait_reason(lab: Lab, name: str, want: str, timeout: float = 120) -> None:
    if not wait_until(lambda: _reason(lab, name) == want, timeout, interval=0.5):
        raise AssertionError(f"{name}: {_reason(lab, name)!r}, not {want!r}; console:\n"
                             f"{lab.console(name)[-1500:]}\nsupervisor log:\n"
                             f"{_log(lab, name)[-1500:]}")


def _log(lab: Lab, name: str) -> str:
    try:
        return (lab.rundir(name) / "supervisor.log").read_text()
    except FileNotFoundError:
        return ""


def test_watchdog_pause_is_paused_watchdog_and_resumes(started: Lab) -> None:
    lab, name = started, "tv-wdpause"
    lab.wait_console(name, r"TV-WATCHDOG-ARMED 0000:", timeout=120)
    _wait_reason(lab, name, "paused (watchdog)")
    assert "event WATCHDOG: the guest's watchdog fired, action pause" in _log(lab, name)
    row = next(r for r in lab.tv_json("list")["domains"] if r["name"] == name)
    assert row["state"] == "paused" and row["id"] is not None, row
    lab.tv("resume", name)
    assert _reason(lab, name) == "running (unpaused)"


def test_watchdog_poweroff_is_shut_off_crashed(started: Lab) -> None:
    lab, name = started, "tv-wdoff"
    lab.wait_console(name, r"TV-WATCHDOG-ARMED 0000:", timeout=120)
    _wait_reason(lab, name, "shut off (crashed)")
    assert "action poweroff" in _log(lab, name)


def test_panic_with_preserve_stays_crashed_panicked_until_destroy(started: Lab) -> None:
    lab, name = started, "tv-pnkeep"
    _wait_reason(lab, name, "crashed (panicked)")
    assert "Kernel panic" in lab.console(name)
    row = next(r for r in lab.tv_json("list")["domains"] if r["name"] == name)
    assert row["state"] == "crashed" and row["id"] is not None, row
    qemu = lab.state(name)["qemu_pid"]
    assert qemu and lab.state(name)["state"] == "crashed"
    assert "action pause" in _log(lab, name)
    lab.tv("destroy", name)
    assert _reason(lab, name) == "shut off (destroyed)"


def test_panic_with_destroy_is_shut_off_crashed(started: Lab) -> None:
    lab, name = started, "tv-pndestroy"
    _wait_reason(lab, name, "shut off (crashed)")
    assert "Kernel panic" in (lab.rundir(name) / "console.log").read_text(errors="replace")
    assert "event GUEST_PANICKED: the guest panicked (action poweroff)" in _log(lab, name)
    assert lab.state(name)["restarts"] == 0


def test_panic_with_restart_boots_a_fresh_qemu(started: Lab) -> None:
    lab, name = started, "tv-pnrestart"
    assert wait_until(lambda: lab.state(name).get("restarts", 0) >= 1, 120, interval=0.5), \
        _log(lab, name)[-1500:]
    assert "event GUEST_PANICKED" in _log(lab, name)
    assert "ended (exited with status 1): crashed" in _log(lab, name), _log(lab, name)[-1500:]
    # the first QEMU's console was kept as console.log.old when the fresh one started
    assert "Kernel panic" in (lab.rundir(name) / "console.log.old").read_text(errors="replace")
