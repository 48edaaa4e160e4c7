"""The declaration helper (`tapvirt.conf.decl`): one field per attribute gives parsing,
coded errors and the canonical format, and read/write is a fixed point."""

from __future__ import annotations

import random
from dataclasses import dataclass
from enum import StrEnum

import pytest

from tapvirt.conf import decl
from tapvirt.conf import errors as E
from tapvirt.conf.xml import Reader, load
from tapvirt.errors import TapvirtError


class Tick(StrEnum):
    DELAY = "delay"
    CATCHUP = "catchup"


@dataclass(frozen=True)
class Timer:
    name: str = decl.string("@name", required=True)
    tickpolicy: Tick | None = decl.enum("@tickpolicy", Tick)
    present: bool | None = decl.yesno("@present")


@dataclass(frozen=True)
class Gadget:
    model: str = decl.string("@model", required=True)
    autodeflate: bool | None = decl.onoff("@autodeflate")
    period: int | None = decl.uint("stats/@period", 0, 100)
    image: str | None = decl.path("source/@file")
    label: str | None = decl.text("label/text()")
    acpi: bool = decl.flag("acpi")
    timers: tuple[Timer, ...] = decl.elements("timer", Timer)
    index: int = 0  # not XML: given by the family module


def _read(xml: str) -> Gadget:
    root = load(xml, "test")
    return decl.read(Reader(root, "test", random.Random(1)), root, Gadget, index=7)


def _write(g: Gadget) -> str:
    out: list[str] = []
    decl.write(g, "gadget", out.append, 0)
    return "\n".join(out) + "\n"


FULL = """\
<gadget model='virtio' autodeflate='on'>
  <stats period='10'/>
  <source file='/var/img'/>
  <label>A &amp; B</label>
  <acpi/>
  <timer name='rtc' tickpolicy='catchup'/>
  <timer name='hpet' present='no'/>
</gadget>
"""


def test_read_gives_typed_values_and_the_given_fields() -> None:
    g = _read(FULL)
    assert g == Gadget(
        model="virtio", autodeflate=True, period=10, image="/var/img", label="A & B",
        acpi=True, timers=(Timer("rtc", Tick.CATCHUP), Timer("hpet", None, False)), index=7,
    )


def test_write_is_canonical_and_a_fixed_point() -> None:
    assert _write(_read(FULL)) == FULL
    assert _read(_write(_read(FULL))) == _read(FULL)


def test_absent_stays_absent() -> None:
    g = _read("<gadget model='x'/>")
    assert g == Gadget(model="x", index=7)
    assert _write(g) == "<gadget model='x'/>\n"


@pytest.mark.parametrize(("xml", "code", "cause"), [
    ("<gadget/>", E.MISSING_ATTRIBUTE, "element <gadget> needs the attribute 'model'"),
    ("<gadget model='x' color='red'/>", E.UNSUPPORTED_ATTRIBUTE, "attribute 'color'"),
    ("<gadget model='x'><wheel/></gadget>", E.UNSUPPORTED_ELEMENT, "element <wheel>"),
    ("<gadget model='x' autodeflate='yes'/>", E.INVALID_VALUE,
     "Invalid value for attribute 'autodeflate' in element 'gadget': 'yes'."),
    ("<gadget model='x'><stats period='101'/></gadget>", E.INVALID_VALUE,
     "attribute 'period' in element 'stats' is 101, outside 0..100"),
    ("<gadget model='x'><stats period='-1'/></gadget>", E.INVALID_VALUE,
     "Expected non-negative integer value"),
    ("<gadget model='x'><source file='rel'/></gadget>", E.INVALID_PATH, "absolute path"),
    ("<gadget model='x'><timer name='rtc' tickpolicy='merge'/></gadget>", E.INVALID_VALUE,
     "Invalid value for attribute 'tickpolicy' in element 'timer': 'merge'."),
    ("<gadget model='x'><acpi state='on'/></gadget>", E.UNSUPPORTED_ATTRIBUTE,
     "attribute 'state' of <acpi>"),
    ("<gadget model='x'><stats/><stats/></gadget>", E.DUPLICATE_ELEMENT, "only once"),
])
def test_errors_are_coded_and_name_the_place(xml: str, code: object, cause: str) -> None:
    with pytest.raises(TapvirtError) as info:
        _read(xml)
    assert info.value.code is code
    assert cause in info.value.cause
