"""xml2xml: input -> canonical output (a fixed point); invalid: input -> code + message."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tapvirt.conf.format import format_domain
from tapvirt.conf.parse import parse_domain, parse_domain_file
from tapvirt.errors import TapvirtError
from tests.unit.conf.corpus import (
    expected_error,
    expected_output,
    invalid_cases,
    seeded,
    xml2xml_cases,
)

REGEN = os.environ.get("TAPVIRT_REGEN") == "1"  # rewrite NAME.out.xml files from the code


@pytest.mark.parametrize("case", xml2xml_cases(), ids=lambda p: p.stem)
def test_xml2xml(case: Path) -> None:
    dom = parse_domain_file(case, rand=seeded())
    out = format_domain(dom)
    expected = expected_output(case)
    if REGEN and out != case.read_text():
        expected = case.with_name(case.stem + ".out.xml")
        expected.write_text(out)
    assert out == expected.read_text()
    # the canonical form is a fixed point and describes the same domain
    again = parse_domain(out, rand=seeded())
    assert again == dom
    assert format_domain(again) == out


@pytest.mark.parametrize("case", invalid_cases(), ids=lambda p: p.stem)
def test_invalid(case: Path) -> None:
    want = expected_error(case)
    with pytest.raises(TapvirtError) as info:
        parse_domain_file(case, rand=seeded())
    err = info.value
    assert err.code.code == want.code, err.render()
    assert want.fragment in err.message, err.render()
    assert err.fix, "every error says how to fix it"
    if want.line is not None:
        assert err.line == want.line, err.render()

