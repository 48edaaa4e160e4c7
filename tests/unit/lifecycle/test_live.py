"""Verbs on a running guest, against a real QEMU (no guest OS: SeaBIOS finds nothing to
boot and idles), through the CLI as a user runs them: suspend/resume, reset, reboot,
link state, memory statistics, the raw monitor, and their errors."""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tapvirt.qemu.qmp import QmpClient
from tests.support.reaper import reap_module_orphans  # noqa: F401 (autouse fixture)
from tests.unit.lifecycle.live_cli import runtime_dirs, tv, tvj

QEMU = shutil.which("qemu-system-x86_64")
pytestmark = pytest.mark.skipif(QEMU is None, reason="qemu-system-x86_64 is not installed")

XML = """<domain type='qemu'><name>{name}</name><memory unit='MiB'>32</memory>
<os><type arch='x86_64' machine='pc'>hvm</type></os>{features}<devices>
<interface type='user'><mac address='52:54:00:00:00:01'/><model type='virtio'/></interface>
</devices></domain>"""


@pytest.fixture
def dirs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    return runtime_dirs(tmp_path, monkeypatch)


@pytest.fixture
def guest(dirs: Path, capsys: pytest.CaptureFixture[str]) -> Iterator[str]:
    (dirs / "d.xml").write_text(XML.format(name="lv1", features="<features><acpi/></features>"))
    assert tv(capsys, "define", str(dirs / "d.xml"))[0] == 0
    assert tv(capsys, "start", "lv1")[0] == 0
    try:
        yield "lv1"
    finally:
        tv(capsys, "destroy", "lv1")


def _qmp_status(dirs: Path, name: str) -> str:
    with QmpClient.connect(str(dirs / "run" / "tapvirt" / name / "qmp.sock")) as qmp:
        return qmp.status()


def test_suspend_resume(guest: str, dirs: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, _ = tv(capsys, "suspend", guest)
    assert rc == 0 and out.strip() == f"Domain '{guest}' suspended"
    assert tv(capsys, "domstate", guest, "--reason")[1].strip() == "paused (user)"
    assert _qmp_status(dirs, guest) == "paused"
    # suspending twice is an error with a code, not a silent no-op
    assert tvj(capsys, "suspend", guest)["error"]["code"] == "domain-not-running"
    assert tv(capsys, "resume", guest)[0] == 0
    assert tv(capsys, "domstate", guest, "--reason")[1].strip() == "running (unpaused)"
    assert _qmp_status(dirs, guest) == "running"
    assert tvj(capsys, "resume", guest)["error"]["code"] == "domain-not-running"


def test_link_state_live_and_config(guest: str, capsys: pytest.CaptureFixture[str]) -> None:
    mac = "52:54:00:00:00:01"
    assert tv(capsys, "domif-getlink", guest, mac)[1].strip() == f"{mac} up"
    rc, out, _ = tv(capsys, "domif-setlink", guest, mac, "down")
    assert rc == 0 and out.strip() == "Device updated successfully"
    assert tvj(capsys, "domif-getlink", guest, "net0")["state"] == "down"
    assert "<link state='down'/>" in tv(capsys, "dumpxml", guest)[1]
    # the stored definition is untouched by a live change, and vice versa
    assert tvj(capsys, "domif-getlink", guest, mac, "--config")["state"] == "up"
    assert tv(capsys, "domif-setlink", guest, mac, "down", "--config")[0] == 0
    assert tvj(capsys, "domif-getlink", guest, mac, "--config")["state"] == "down"
    assert tv(capsys, "domif-setlink", guest, mac, "up")[0] == 0
    assert tvj(capsys, "domif-getlink", guest, mac)["state"] == "up"
    err = tvj(capsys, "domif-setlink", guest, "nosuch0", "down")["error"]
    assert err["code"] == "device-not-found" and mac in err["cause"]


def test_reset_reboot_and_monitor(guest: str, dirs: Path,
                                  capsys: pytest.CaptureFixture[str]) -> None:
    pid = tvj(capsys, "dominfo", guest)["qemu_pid"]
    assert tv(capsys, "reset", guest)[1].strip() == f"Domain '{guest}' was reset"
    assert tv(capsys, "reboot", guest, "--mode", "reset")[0] == 0
    assert tvj(capsys, "dominfo", guest)["qemu_pid"] == pid  # reset keeps the process
    rc, out, err = tv(capsys, "qemu-monitor-command", guest, "--pretty",
                      '{"execute":"query-status"}')
    assert rc == 0 and json.loads(out)["return"]["status"] == "running"
    assert "unsupported" in err
    assert [w["code"] for w in tvj(capsys, "dominfo", guest)["warnings"]] == [
        "monitor-command-used"]
    rc, _, err = tv(capsys, "qemu-monitor-command", guest, "not json")
    assert rc == 1 and "error[hotplug-unsupported]" in err
    stats = tvj(capsys, "dommemstat", guest)
    assert stats["stats"]["actual"] == 32 * 1024 and stats["stats"]["rss"] > 0


def test_acpi_reboot_is_a_fresh_qemu(guest: str, capsys: pytest.CaptureFixture[str]) -> None:
    """No guest OS answers the power button here, so the QEMU quits as a power-off would
    (`quit` exits 0): with a reboot pending the supervisor starts a fresh QEMU."""
    first = tvj(capsys, "dominfo", guest)
    assert tv(capsys, "reboot", guest)[0] == 0  # acpi: the domain has <acpi/>
    with QmpClient.connect(str(Path(first["qemu_log"]).parent / "qmp.sock")) as qmp:
        qmp.execute("quit")
    deadline = time.monotonic() + 15
    info = first
    while time.monotonic() < deadline:
        info = tvj(capsys, "dominfo", guest)
        if info["state"] == "running" and info["qemu_pid"] not in (None, first["qemu_pid"]):
            break
        time.sleep(0.05)
    assert info["qemu_pid"] != first["qemu_pid"] and info["state"] == "running"
    assert info["reason"] == "restarted" and info["restarts"] == 1


def test_verbs_on_a_stopped_guest(dirs: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (dirs / "d.xml").write_text(XML.format(name="lv2", features=""))
    assert tv(capsys, "define", str(dirs / "d.xml"))[0] == 0
    for argv in (("suspend", "lv2"), ("reset", "lv2"), ("reboot", "lv2"),
                 ("dommemstat", "lv2"), ("domifstat", "lv2", "net0"),
                 ("domifaddr", "lv2", "--source", "arp")):
        assert tvj(capsys, *argv)["error"]["code"] == "domain-not-running", argv
    # the stored definition's link state can be changed while it is shut off
    assert tv(capsys, "domif-setlink", "lv2", "net0", "down")[0] == 0
    assert tvj(capsys, "domif-getlink", "lv2", "net0")["state"] == "down"
    for argv in (("suspend", "nosuch"), ("domif-getlink", "nosuch", "x")):
        assert tvj(capsys, *argv)["error"]["code"] == "domain-not-found"


def test_acpi_reboot_needs_acpi(dirs: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (dirs / "d.xml").write_text(XML.format(name="lv3", features=""))
    assert tv(capsys, "define", str(dirs / "d.xml"))[0] == 0
    assert tv(capsys, "start", "lv3")[0] == 0
    try:
        err = tvj(capsys, "reboot", "lv3", "--mode", "acpi")["error"]
        assert err["code"] == "hotplug-unsupported" and "--mode reset" in err["fix"]
        assert tv(capsys, "reboot", "lv3")[0] == 0  # without ACPI the default is reset
    finally:
        tv(capsys, "destroy", "lv3")


def _editor(dirs: Path, name: str, script: str) -> str:
    """A scripted $EDITOR: a shell script that edits the file in place."""
    path = dirs / name
    path.write_text("#!/bin/sh\n" + script + "\n")
    path.chmod(0o700)
    return str(path)


def test_edit_valid_invalid_unchanged(dirs: Path, capsys: pytest.CaptureFixture[str],
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    (dirs / "d.xml").write_text(XML.format(name="ed1", features=""))
    assert tv(capsys, "define", str(dirs / "d.xml"))[0] == 0
    stored = dirs / "cfg" / "tapvirt" / "domains" / "ed1.xml"
    before = stored.read_text()
    monkeypatch.delenv("VISUAL", raising=False)
    # unchanged: nothing is written
    monkeypatch.setenv("EDITOR", _editor(dirs, "noop", "true"))
    rc, out, _ = tv(capsys, "edit", "ed1")
    assert rc == 0 and out.strip() == "Domain 'ed1' XML configuration not changed."
    # valid: redefined; the temp file was private and is gone
    seen = dirs / "seen"
    monkeypatch.setenv("EDITOR", _editor(dirs, "valid", (
        f"stat -c '%a %n' \"$1\" \"$(dirname \"$1\")\" > {seen}; "
        "sed -i 's/32768/65536/' \"$1\"")))
    rc, out, _ = tv(capsys, "edit", "ed1")
    assert rc == 0 and out.strip() == "Domain 'ed1' XML configuration edited."
    modes = seen.read_text().split("\n")
    assert modes[0].startswith("600 ") and modes[1].startswith("700 ")
    assert not Path(modes[0].split(" ", 1)[1]).exists()
    assert "65536" in stored.read_text()
    edited = stored.read_text()
    # invalid, non-interactive: fails with the parser's code inside, changes nothing
    monkeypatch.setenv("EDITOR", _editor(dirs, "bad", "sed -i 's/<memory/<mem0ry/' \"$1\""))
    rc, _, err = tv(capsys, "edit", "ed1")
    assert rc == 1 and "error[edit-failed]" in err and "nothing was changed" in err
    assert stored.read_text() == edited
    # an editor that fails: nothing changed either
    monkeypatch.setenv("EDITOR", _editor(dirs, "fail", "echo junk > \"$1\"; exit 3"))
    rc, _, err = tv(capsys, "edit", "ed1")
    assert rc == 1 and "status 3" in err and stored.read_text() == edited
    assert before != edited


def test_edit_invalid_interactive_offers_to_edit_again(
        dirs: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    from tapvirt.domains import edit
    from tapvirt.errors import TapvirtError

    (dirs / "d.xml").write_text(XML.format(name="ed2", features=""))
    assert tv(capsys, "define", str(dirs / "d.xml"))[0] == 0
    # the first run breaks the XML, the second (after "try again") fixes it
    flag = dirs / "second"
    monkeypatch.setenv("EDITOR", _editor(dirs, "twice", (
        f"if [ -e {flag} ]; then sed -i 's/<mem0ry/<memory/; s/mem0ry>/memory>/; "
        "s/32768/49152/' \"$1\"; else touch " f"{flag}; sed -i 's/<memory/<mem0ry/; "
        "s/memory>/mem0ry>/' \"$1\"; fi")))
    asked: list[str] = []

    def again(err: TapvirtError) -> bool:
        asked.append(err.code.code)
        return True

    result = edit.edit("ed2", ask=again)
    assert result.changed and len(asked) == 1  # asked once, about the broken edit
    assert "49152" in (dirs / "cfg" / "tapvirt" / "domains" / "ed2.xml").read_text()
