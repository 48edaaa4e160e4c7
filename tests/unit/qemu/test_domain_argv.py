"""Domain-level argv that the golden files cannot pin: a variable clock depends on the
time of the start (libvirt fixes the offset then, as tapvirt does)."""

from __future__ import annotations

import time

from tapvirt.conf.parse import parse_domain
from tapvirt.qemu.argv import build_argv

_DOC = """<domain type='qemu'><name>v</name><memory unit='MiB'>64</memory>
<os><type arch='x86_64' machine='pc'>hvm</type></os>{clock}<devices/></domain>"""


def _rtc(clock: str, now: float) -> str:
    argv = build_argv(parse_domain(_DOC.format(clock=clock)), [], qmp_socket="/q", now=now)
    return argv[argv.index("-rtc") + 1]


def test_variable_clock_is_the_start_time_plus_the_adjustment() -> None:
    # 2001-09-09T01:46:40Z is 1e9 seconds after 1970
    assert _rtc("<clock offset='variable' adjustment='3600'/>", 1e9) == (
        "base=2001-09-09T02:46:40")
    assert _rtc("<clock offset='utc' adjustment='-60'/>", 1e9) == "base=2001-09-09T01:45:40"


def test_variable_clock_with_localtime_basis_adds_the_hosts_utc_offset() -> None:
    offset = time.localtime(1e9).tm_gmtoff
    got = _rtc("<clock offset='variable' adjustment='0' basis='localtime'/>", 1e9)
    want = time.strftime("base=%Y-%m-%dT%H:%M:%S", time.gmtime(1e9 + offset))
    assert got == want


def test_without_clock_qemu_keeps_its_default() -> None:
    argv = build_argv(parse_domain(_DOC.format(clock="")), [], qmp_socket="/q")
    assert "-rtc" not in argv and "-cpu" not in argv
