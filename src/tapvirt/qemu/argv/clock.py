"""`<clock>`: -rtc, the PIT's lost-tick policy, -no-hpet and
the timers that are CPU properties (kvmclock, hypervclock, tsc frequency), as libvirt 9.0
writes them for QEMU 7.2 (qemuBuildClockArgStr, qemuBuildClockCommandLine)."""

from __future__ import annotations

import time
from datetime import UTC, datetime

from tapvirt.conf.domain.clock import TimerTrack
from tapvirt.conf.model import ClockBasis, ClockOffset, Domain, TickPolicy, TimerName

_TRACK = {TimerTrack.GUEST: "vm", TimerTrack.WALL: "host", TimerTrack.REALTIME: "rt"}


def rtc_args(dom: Domain, now: float | None = None) -> list[str]:
    """-rtc (only when the definition has a <clock>; QEMU's default is base=utc)."""
    clock = dom.clock
    if clock is None:
        return []
    if clock.offset is ClockOffset.UTC:
        base = "utc"
    elif clock.offset is ClockOffset.LOCALTIME:
        base = "localtime"
    else:
        if clock.offset is ClockOffset.ABSOLUTE:
            seconds = float(clock.start or 0)
        else:  # variable: the offset from the basis, fixed at start (libvirt's way)
            seconds = (time.time() if now is None else now) + int(clock.adjustment or "0")
            if clock.basis is ClockBasis.LOCALTIME:
                seconds += time.localtime(seconds).tm_gmtoff
        base = datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S")
    opt = f"base={base}"
    rtc = clock.timer(TimerName.RTC)
    if rtc is not None:
        if rtc.track is not None:
            opt += f",clock={_TRACK[rtc.track]}"
        if rtc.tickpolicy is TickPolicy.CATCHUP:
            opt += ",driftfix=slew"
    argv = ["-rtc", opt]
    pit = clock.timer(TimerName.PIT)
    if pit is not None and pit.tickpolicy in (None, TickPolicy.DELAY, TickPolicy.DISCARD):
        policy = "discard" if pit.tickpolicy is TickPolicy.DISCARD else "delay"
        argv += ["-global", f"kvm-pit.lost_tick_policy={policy}"]
    hpet = clock.timer(TimerName.HPET)
    if hpet is not None and hpet.present is False:
        argv.append("-no-hpet")  # libvirt 9.0 with QEMU 7.2 (not -machine hpet=off)
    return argv


def timer_cpu_flags(dom: Domain) -> list[str]:
    if dom.clock is None:
        return []
    flags: list[str] = []
    for t in dom.clock.timers:
        if t.name is TimerName.KVMCLOCK and t.present is not None:
            flags.append(f"kvmclock={'on' if t.present else 'off'}")
        elif t.name is TimerName.HYPERVCLOCK and t.present:
            flags.append("hv-time=on")
        elif t.name is TimerName.TSC and t.frequency:
            flags.append(f"tsc-frequency={t.frequency}")
    return flags
