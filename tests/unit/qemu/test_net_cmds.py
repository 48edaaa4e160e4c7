"""`tapvirt check` and `domxml-to-native` through main(), on a fake host."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tapvirt.cli import net_cmds
from tapvirt.cli.main import main
from tapvirt.host.fake import FakeHost

DATA = Path(__file__).resolve().parents[2] / "data" / "xml2argv"


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> dict[str, Any]:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "cfg"))
    monkeypatch.delenv("TAPVIRT_TUN_NODE", raising=False)
    box: dict[str, Any] = {}

    def host() -> FakeHost:
        desc = json.loads((DATA / f"{box['case']}.host.json").read_text())
        desc.setdefault("identity", {"uid": 1000, "gids": [1000], "user": "alice"})
        made = FakeHost.from_json(desc)
        box["host"] = made
        return made

    monkeypatch.setattr(net_cmds, "_host", host)
    monkeypatch.setattr("tapvirt.qemu.connect.user_label", lambda uid: "alice")
    return box


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    rc = main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


def test_check_ok_warning_error(fake: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> None:
    fake["case"] = "eth-unmanaged-tap"
    assert run(capsys, "check", str(DATA / "eth-unmanaged-tap.xml"))[:2] == (
        0, "net0 (52:54:00:11:11:11) ethernet mytap0: ok\n")
    fake["case"] = "eth-unmanaged-tap-down-warning"
    rc, out, _ = run(capsys, "check", "--json", str(DATA / f"{fake['case']}.xml"))
    assert rc == 0 and json.loads(out)["verdict"] == "warning"
    fake["case"] = "err-foreign-owner"
    rc, out, _ = run(capsys, "check", str(DATA / f"{fake['case']}.xml"))
    assert rc == 1
    assert "error[device-foreign-owner]: tap mytap0 belongs to uid 2000" in out
    assert "fix: recreate it for this user as root: ip link del mytap0" in out
    assert not fake["host"].opened


def test_check_json_has_one_object_per_interface(
        fake: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> None:
    fake["case"] = "several-nics"
    rc, out, _ = run(capsys, "check", "--json", str(DATA / "several-nics.xml"))
    data = json.loads(out)
    assert rc == 0 and data["domain"] == "several-nics" and data["verdict"] == "ok"
    assert [(i["interface"], i["type"], i["device"], i["verdict"], i["code"])
            for i in data["interfaces"]] == [
        ("net0", "ethernet", "mytap0", "ok", None), ("net1", "ethernet", "mv0", "ok", None),
        ("net2", "user", None, "ok", None), ("net3", "ethernet", "tap1", "ok", None)]


def test_check_a_defined_domain_by_name(
        fake: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> None:
    fake["case"] = "err-mac-conflict"
    assert run(capsys, "define", str(DATA / "err-mac-conflict.xml"))[0] == 0
    rc, out, _ = run(capsys, "check", "--json", "err-mac-conflict")
    item = json.loads(out)["interfaces"][0]
    assert rc == 1 and item["code"] == "mac-conflict"
    assert item["fix"] == "give the tap another MAC as root: ip link set mytap0 address " \
                          "fe:54:00:11:11:11"
    rc, _, err = run(capsys, "check", "nosuchdomain")
    assert rc == 1 and "error[domain-not-found]" in err


def test_tun_node_option_and_environment(fake: dict[str, Any], monkeypatch: pytest.MonkeyPatch,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    fake["case"] = "eth-unmanaged-tap-private-node"
    xml = str(DATA / f"{fake['case']}.xml")
    rc, out, _ = run(capsys, "check", "--json", xml)
    assert rc == 1 and json.loads(out)["interfaces"][0]["code"] == "tun-node-inaccessible"
    assert run(capsys, "check", "--tun-node", "/home/alice/tun", xml)[0] == 0
    monkeypatch.setenv("TAPVIRT_TUN_NODE", "/home/alice/tun")
    assert run(capsys, "check", xml)[0] == 0


def test_domxml_to_native_prints_the_golden_argv(
        fake: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> None:
    fake["case"] = "several-nics"
    rc, out, err = run(capsys, "domxml-to-native", "--qmp-socket",
                       "/run/user/1000/tapvirt/guest/qmp.sock", str(DATA / "several-nics.xml"))
    golden = [line for line in (DATA / "several-nics.args").read_text().splitlines()
              if not line.startswith("#")]
    assert rc == 0 and out.splitlines() == golden
    assert 'note: start then sends QMP {"execute": "set_link"' in err
    assert not fake["host"].opened  # nothing opened


def test_domxml_to_native_notes_what_would_fail(
        fake: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> None:
    fake["case"] = "err-queues-single-tap"
    rc, out, err = run(capsys, "domxml-to-native", "--fd-base", "10",
                       str(DATA / f"{fake['case']}.xml"))
    assert rc == 0 and '{"type":"tap","fds":"10:11:12:13","id":"hostnet0"}' in out
    assert "note: start would fail: error[queues-mismatch]" in err
