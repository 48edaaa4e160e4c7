"""Shared by the tests of the verbs on running guests (test_live, test_hotplug): private
runtime and config directories, and the CLI run in-process as a user runs it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tapvirt.cli.main import main


def runtime_dirs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    xdg = tmp_path / "run"
    xdg.mkdir(mode=0o700)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(xdg))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "cfg"))
    monkeypatch.delenv("TAPVIRT_RUNTIME_DIR", raising=False)
    return tmp_path


def tv(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    rc = main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


def tvj(capsys: pytest.CaptureFixture[str], *argv: str) -> Any:
    rc, out, err = tv(capsys, *argv, "--json")
    data = json.loads(out)
    assert (rc == 0) == data["ok"], (out, err)
    return data
