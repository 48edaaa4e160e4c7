"""The definition verbs through tapvirt's real entry point (main(argv)) and one subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tapvirt.cli.main import main
from tests.unit.conf.corpus import INVALID, XML2XML, expected_output

GOOD = XML2XML / "eth-unmanaged-tap.xml"  # domain 'oracle'
BAD = INVALID / "oracle-08-bridge-unmanaged.xml"
SRC = Path(__file__).resolve().parents[3] / "src"


@pytest.fixture(autouse=True)
def config_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "cfg"))
    return tmp_path / "cfg"


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    rc = main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


def test_validate_good_and_bad(capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, _ = run(capsys, "validate", str(GOOD))
    assert rc == 0 and "valid (domain 'oracle')" in out
    rc, out, _ = run(capsys, "validate", str(GOOD), str(BAD))
    assert rc == 1
    assert "error[managed-not-ethernet]" in out and "(line 12)" in out and "fix:" in out
    # the offending line is quoted between the message and the fix
    assert "\n    12 |     <target dev='mytap0' managed='no'/>\n  fix: " in out


def test_validate_json(capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, _ = run(capsys, "validate", "--json", str(GOOD), str(BAD), "/nonexistent.xml")
    assert rc == 1
    doc = json.loads(out)
    assert doc["ok"] is False
    good, bad, missing = doc["results"]
    assert good == {"file": str(GOOD), "ok": True, "name": "oracle", "warnings": []}
    assert bad["error"]["code"] == "managed-not-ethernet" and bad["error"]["line"] == 12
    assert missing["error"]["code"] == "file-unreadable"


def test_define_dumpxml_list_undefine(
    capsys: pytest.CaptureFixture[str], config_home: Path
) -> None:
    rc, out, _ = run(capsys, "define", str(GOOD))
    assert rc == 0 and out == f"Domain 'oracle' defined from {GOOD}\n"
    rc, out, _ = run(capsys, "dumpxml", "oracle")
    # the canonical form: the input plus the implicit controllers and PCI addresses
    assert rc == 0 and out == expected_output(GOOD).read_text()
    assert (config_home / "tapvirt" / "domains" / "oracle.xml").read_text() == out

    rc, out, _ = run(capsys, "list")
    assert rc == 0 and "oracle" not in out  # like virsh: without --all only running ones
    rc, out, _ = run(capsys, "list", "--all")
    assert rc == 0 and " -    oracle   shut off" in out
    rc, out, _ = run(capsys, "list", "--all", "--json")
    assert json.loads(out) == {"ok": True, "domains": [{
        "id": None, "name": "oracle", "uuid": "4dea22b3-1d52-d8f3-2516-782e98ab3fa0",
        "state": "shut off",
    }]}

    rc, out, _ = run(capsys, "define", "--json", str(GOOD))
    doc = json.loads(out)
    assert rc == 0 and doc["created"] is False and doc["name"] == "oracle"

    rc, out, _ = run(capsys, "undefine", "oracle")
    assert rc == 0 and out == "Domain 'oracle' has been undefined\n"
    rc, out, err = run(capsys, "dumpxml", "oracle")
    assert rc == 1 and "error[domain-not-found]" in err
    rc, out, _ = run(capsys, "undefine", "--json", "oracle")
    assert rc == 1 and json.loads(out)["error"]["code"] == "domain-not-found"


def test_define_invalid_reports_and_stores_nothing(
    capsys: pytest.CaptureFixture[str], config_home: Path
) -> None:
    rc, out, err = run(capsys, "define", str(BAD))
    assert rc == 1 and out == ""
    assert err.startswith("error[managed-not-ethernet]: /domain/devices/interface/target/@managed")
    rc, out, _ = run(capsys, "define", "--json", "/nonexistent.xml")
    assert rc == 1 and json.loads(out)["error"]["code"] == "file-unreadable"
    assert not (config_home / "tapvirt" / "domains" / "oracle.xml").exists()


def test_console_script_runs_as_a_process(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(SRC), "XDG_CONFIG_HOME": str(tmp_path)}

    def tapvirt(*argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "tapvirt.cli.main", *argv],
            env=env, capture_output=True, text=True, check=False,
        )

    proc = tapvirt("validate", str(BAD))
    assert proc.returncode == 1 and "Traceback" not in proc.stderr + proc.stdout
    proc = tapvirt("define", str(GOOD))
    assert proc.returncode == 0, proc.stderr
    assert tapvirt("dumpxml", "oracle").stdout == expected_output(GOOD).read_text()


WARNED = XML2XML / "cpu-maximum.xml"  # vcpu cpuset: kept, not applied


def test_no_effect_elements_are_warned_by_validate_define_and_check(
    capsys: pytest.CaptureFixture[str],
) -> None:
    rc, out, _ = run(capsys, "validate", str(WARNED))
    assert rc == 0 and "valid (domain 'guest')" in out
    assert "warning[no-effect]: /domain/vcpu/@cpuset: cpuset='0-3,^2' is kept" in out
    rc, out, _ = run(capsys, "validate", "--json", str(WARNED))
    (result,) = json.loads(out)["results"]
    assert [w["code"] for w in result["warnings"]] == ["no-effect"]
    rc, out, _ = run(capsys, "define", str(WARNED))
    assert rc == 0 and "warning[no-effect]" in out
    rc, out, _ = run(capsys, "dumpxml", "guest")
    assert "cpuset='0-3,^2'" in out  # kept in the definition
    # check reads the stored (cached) definition and warns the same way
    rc, out, _ = run(capsys, "check", "guest")
    assert rc == 0 and "warning[no-effect]: /domain/vcpu/@cpuset" in out


def test_automatic_numa_placement_is_kept_and_warned(capsys: pytest.CaptureFixture[str]) -> None:
    # libvirt asks numad; tapvirt has none: kept in the definition, no effect, said so
    rc, out, _ = run(capsys, "validate", "--json", str(XML2XML / "numatune-placement-auto.xml"))
    (result,) = json.loads(out)["results"]
    assert rc == 0 and [w["subject"] for w in result["warnings"]] == [
        "/domain/vcpu/@placement", "/domain/numatune/memory/@placement"]
    rc, out, _ = run(capsys, "validate", str(XML2XML / "numatune-auto-with-cpuset.xml"))
    assert rc == 0 and "/domain/numatune/memory/@placement: placement='auto' is kept" in out
    assert "/domain/vcpu/@placement" not in out  # pinned with cpuset: stays static
