"""The hot verbs' hand parser (cli/fast.py) agrees with argparse on every command line it
accepts, and leaves every other one to argparse."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tapvirt.cli import fast
from tapvirt.cli.main import _parse_full

ACCEPTED = [
    ["start", "web"], ["start", "web", "--paused"], ["start", "--json", "web"],
    ["start", "web", "--timeout", "5"], ["start", "web", "--timeout=2.5", "--json"],
    ["start", "web", "--tun-node", "/tmp/tun"], ["start", "--tun-node=/x/tun", "web"],
    ["create", "/tmp/d.xml", "--paused", "--json", "--timeout", "60"],
    ["destroy", "web"], ["destroy", "--json", "web"], ["start", "dom-1.x_y"],
]
LEFT_TO_ARGPARSE = [
    [], ["start"], ["start", "a", "b"], ["start", "-h"], ["start", "web", "--help"],
    ["start", "web", "--pause"], ["start", "web", "--paused", "--paused"],
    ["start", "web", "--timeout"], ["start", "web", "--timeout", "x"],
    ["start", "web", "--timeout", "-1"], ["start", "web", "--paused=1"],
    ["start", "--", "web"], ["start", "-"], ["destroy", "web", "--paused"],
    ["list"], ["shutdown", "web"], ["--version"], ["start", "web", "--json=yes"],
]


@pytest.mark.parametrize("argv", ACCEPTED, ids=" ".join)
def test_fast_path_matches_argparse(argv: list[str]) -> None:
    quick = fast.parse(argv)
    assert quick is not None
    full = _parse_full(argv)
    assert not isinstance(full, int)
    # every attribute argparse sets (verb-specific ones too) has the same value
    assert {k: v for k, v in vars(full).items()} == vars(quick)


@pytest.mark.parametrize("argv", LEFT_TO_ARGPARSE, ids=" ".join)
def test_everything_else_goes_to_argparse(argv: list[str]) -> None:
    assert fast.parse(argv) is None


def test_start_path_imports_no_argparse() -> None:
    code = ("import sys\nfrom tapvirt.cli import fast\n"
            "ns = fast.parse(['start', 'x', '--paused'])\n"
            "assert ns is not None\n"
            "print('argparse' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "False"
