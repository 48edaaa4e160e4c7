"""A short soak (bench/soak.py with small counts): lifecycles in a row leave nothing
behind: no process, no fd on a device, no link or node, no runtime file; the
supervisor's fd count stays the same over live requests. The full run's numbers are in
docs/lifecycle.md."""

from __future__ import annotations

import shutil
from collections.abc import Iterator

import pytest
from bench.soak import leaks, soak

from tests.e2e.lab import Lab, module_lab

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(shutil.which("qemu-system-x86_64") is None,
                       reason="qemu-system-x86_64 is not installed"),
]


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    yield from module_lab()


def test_short_soak_leaves_nothing(lab: Lab) -> None:
    res = soak(lab, guests=2, cycles=3, creates=4, requests=10)
    assert leaks(res) == []
    assert res["cycle_supervisor_rss"]["samples"] == 6
    assert res["cycle_supervisor_rss"]["max_kib"] < 15 * 1024
