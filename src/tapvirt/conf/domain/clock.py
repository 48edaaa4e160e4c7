"""`<clock>`: the guest's RTC offset and its timers (libvirt 9.0 semantics for QEMU).

libvirt's rules kept: an integer `adjustment` on offset utc/localtime makes the clock
`variable` with that basis; `variable` without adjustment/basis is adjustment 0, basis
utc; the timer checks of qemuValidateDomainDefClockTimers (rtc track boot, rtc tickpolicy
merge/discard, pit merge, platform and armvtimer are refused with libvirt's messages).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import TYPE_CHECKING

from tapvirt.conf import decl
from tapvirt.conf import errors as E
from tapvirt.conf.xmlout import Writer

if TYPE_CHECKING:
    from lxml import etree

    from tapvirt.conf.xml import Reader


class ClockOffset(StrEnum):
    UTC = "utc"
    LOCALTIME = "localtime"
    TIMEZONE = "timezone"
    VARIABLE = "variable"
    ABSOLUTE = "absolute"


class ClockBasis(StrEnum):
    UTC = "utc"
    LOCALTIME = "localtime"


class TimerName(StrEnum):
    PLATFORM = "platform"
    PIT = "pit"
    RTC = "rtc"
    HPET = "hpet"
    TSC = "tsc"
    KVMCLOCK = "kvmclock"
    HYPERVCLOCK = "hypervclock"
    ARMVTIMER = "armvtimer"


class TickPolicy(StrEnum):
    DELAY = "delay"
    CATCHUP = "catchup"
    MERGE = "merge"
    DISCARD = "discard"


class TimerTrack(StrEnum):
    BOOT = "boot"
    GUEST = "guest"
    WALL = "wall"
    REALTIME = "realtime"


class TscMode(StrEnum):
    AUTO = "auto"
    NATIVE = "native"
    EMULATE = "emulate"
    PARAVIRT = "paravirt"
    SMPSAFE = "smpsafe"


_U32 = 2**32 - 1


@dataclass(frozen=True)
class Catchup:
    threshold: int | None = decl.uint("@threshold", 0, _U32)
    slew: int | None = decl.uint("@slew", 0, _U32)
    limit: int | None = decl.uint("@limit", 0, _U32)


@dataclass(frozen=True)
class Timer:
    name: TimerName = decl.enum("@name", TimerName, required=True)
    present: bool | None = decl.yesno("@present")
    tickpolicy: TickPolicy | None = decl.enum("@tickpolicy", TickPolicy)
    track: TimerTrack | None = decl.enum("@track", TimerTrack)
    frequency: int | None = decl.uint("@frequency", 0, 2**64 - 1)
    mode: TscMode | None = decl.enum("@mode", TscMode)
    catchup: Catchup | None = decl.element("catchup", Catchup)


_ADJUSTMENT = re.compile(r"(?:reset|[+-]?[0-9]{1,19})\Z")


@dataclass(frozen=True)
class Clock:
    offset: ClockOffset = decl.enum("@offset", ClockOffset, required=True)
    # 'reset' (utc/localtime) or seconds (variable: always set, 0 by default)
    adjustment: str | None = decl.string(
        "@adjustment", pattern=_ADJUSTMENT, fix="write 'reset' or a whole number of seconds"
    )
    basis: ClockBasis | None = decl.enum("@basis", ClockBasis)  # variable only
    start: int | None = decl.uint("@start", 0, 253402300799)  # absolute: seconds since 1970
    timers: tuple[Timer, ...] = decl.elements("timer", Timer)

    def timer(self, name: TimerName) -> Timer | None:
        return next((t for t in self.timers if t.name is name), None)


def parse_clock(r: Reader, el: etree._Element) -> Clock:
    values, _ = decl.read_fields(r, el, Clock, extra_attrs=("timezone",))
    clock = Clock(**values)
    off = clock.offset
    if off is ClockOffset.TIMEZONE:
        raise r.fail(
            E.INVALID_VALUE, el, "clock offset 'timezone' is not supported by tapvirt",
            "use offset='localtime' and start tapvirt with TZ set, or offset='utc'",
            attr="offset",
        )
    for attr, allowed in (("basis", (ClockOffset.VARIABLE,)),
                          ("start", (ClockOffset.ABSOLUTE,)),
                          ("adjustment", (ClockOffset.UTC, ClockOffset.LOCALTIME,
                                          ClockOffset.VARIABLE))):
        if el.get(attr) is not None and off not in allowed:
            raise r.fail(
                E.INVALID_VALUE, el,
                f"attribute '{attr}' of <clock> has no meaning with offset='{off}'",
                f"remove {attr}= or use offset='{allowed[0]}'", attr=attr,
            )
    if off in (ClockOffset.UTC, ClockOffset.LOCALTIME) and clock.adjustment not in (
        None, "reset"
    ):
        # libvirt: an adjustment in seconds turns the clock into a variable one
        basis = ClockBasis.UTC if off is ClockOffset.UTC else ClockBasis.LOCALTIME
        clock = replace(clock, offset=ClockOffset.VARIABLE, basis=basis,
                        adjustment=str(int(clock.adjustment or "0")))
    elif off is ClockOffset.VARIABLE:
        if clock.adjustment == "reset":
            raise r.fail(
                E.INVALID_VALUE, el, "unknown clock adjustment 'reset'",
                "write the offset from the basis in seconds, e.g. adjustment='3600'",
                attr="adjustment",
            )
        clock = replace(clock, adjustment=str(int(clock.adjustment or "0")),
                        basis=clock.basis or ClockBasis.UTC)
    elif off is ClockOffset.ABSOLUTE and clock.start is None:
        raise r.fail(
            E.MISSING_ATTRIBUTE, el, "missing 'start' attribute for clock with offset='absolute'",
            "add start='SECONDS-SINCE-1970' (the guest's RTC at boot)",
        )
    seen: set[TimerName] = set()
    for t_el, timer in zip(el.findall("timer"), clock.timers, strict=True):
        _check_timer(r, t_el, timer)
        if timer.name in seen:
            raise r.fail(
                E.DUPLICATE_ELEMENT, t_el, f"timer '{timer.name}' is listed twice",
                "keep one <timer> of each name",
            )
        seen.add(timer.name)
    return clock


def _check_timer(r: Reader, el: etree._Element, t: Timer) -> None:
    def refuse(cause: str, fix: str, attr: str | None = None) -> None:
        raise r.fail(E.UNSUPPORTED_VALUE, el, cause, fix, attr=attr)

    if t.name is TimerName.PLATFORM:
        refuse("unsupported timer type (name) 'platform'", "remove the platform timer")
    if t.name is TimerName.ARMVTIMER:
        refuse("Configuring the 'armvtimer' timer is not supported for x86 guests",
               "remove the armvtimer timer (it exists on aarch64 KVM guests only)")
    if t.name is TimerName.RTC:
        if t.track is TimerTrack.BOOT:
            refuse("unsupported rtc timer track 'boot'", "use track='guest' or 'wall'",
                   "track")
        if t.tickpolicy in (TickPolicy.MERGE, TickPolicy.DISCARD):
            refuse(f"unsupported rtc timer tickpolicy '{t.tickpolicy}'",
                   "use tickpolicy='catchup' or 'delay'", "tickpolicy")
    elif t.track is not None:
        refuse(f"track is only for the rtc timer, not '{t.name}'", "remove track=", "track")
    if t.name is TimerName.PIT and t.tickpolicy is TickPolicy.MERGE:
        refuse("unsupported pit tickpolicy 'merge'", "use tickpolicy='delay' or 'discard'",
               "tickpolicy")
    if t.name is not TimerName.TSC and (t.frequency is not None or t.mode is not None):
        refuse(f"frequency and mode are only for the tsc timer, not '{t.name}'",
               "remove frequency= and mode=")
    if t.catchup is not None and t.tickpolicy is not TickPolicy.CATCHUP:
        refuse("<catchup> needs tickpolicy='catchup'", "add tickpolicy='catchup' or "
               "remove <catchup>")
    if t.name is TimerName.HPET and t.tickpolicy is not None:
        refuse("the hpet timer takes no tickpolicy in QEMU", "remove tickpolicy=",
               "tickpolicy")


def format_clock(clock: Clock, w: Writer) -> None:
    decl.write(clock, "clock", w, 1)
