"""The lifecycle verbs' user errors: one line with a code and a fix, exit 1, no traceback."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tapvirt.cli.main import main

XML = """<domain type='qemu'><name>cli1</name><memory unit='MiB'>32</memory>
<os><type arch='x86_64' machine='pc'>hvm</type></os><devices>
<interface type='user'><mac address='52:54:00:00:00:01'/><model type='virtio'/></interface>
</devices></domain>"""


@pytest.fixture(autouse=True)
def dirs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    xdg = tmp_path / "run"
    xdg.mkdir(mode=0o700)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(xdg))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "cfg"))
    monkeypatch.delenv("TAPVIRT_RUNTIME_DIR", raising=False)
    return tmp_path


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    rc = main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


@pytest.mark.parametrize("argv", [
    ("start", "nosuch"), ("destroy", "nosuch"), ("shutdown", "nosuch"),
    ("domstate", "nosuch"), ("dominfo", "nosuch"), ("domiflist", "nosuch"),
    ("dumpxml", "nosuch"), ("console", "nosuch", "--no-follow"), ("resume", "nosuch"),
])
def test_unknown_domain(capsys: pytest.CaptureFixture[str], argv: tuple[str, ...]) -> None:
    rc, _, err = _run(capsys, *argv)
    assert rc == 1
    assert err.startswith("error[domain-not-found]: domain nosuch:")
    assert "fix:" in err and "Traceback" not in err


def test_defined_but_not_running(capsys: pytest.CaptureFixture[str], dirs: Path) -> None:
    (dirs / "d.xml").write_text(XML)
    assert _run(capsys, "define", str(dirs / "d.xml"))[0] == 0
    rc, out, _ = _run(capsys, "domstate", "cli1")
    assert rc == 0 and out.strip() == "shut off"
    for verb in ("destroy", "shutdown", "resume"):
        rc, out, _ = _run(capsys, verb, "cli1", "--json")
        assert rc == 1
        assert json.loads(out)["error"]["code"] == "domain-not-running"
    rc, out, _ = _run(capsys, "domiflist", "cli1", "--json")
    assert json.loads(out)["interfaces"] == [{"interface": "net0", "type": "user",
                                              "device": None, "model": "virtio",
                                              "mac": "52:54:00:00:00:01"}]
    rc, out, _ = _run(capsys, "list", "--all", "--json")
    assert [(d["name"], d["state"]) for d in json.loads(out)["domains"]] == [
        ("cli1", "shut off")]


def test_unreadable_create_file(capsys: pytest.CaptureFixture[str], dirs: Path) -> None:
    rc, _, err = _run(capsys, "create", str(dirs / "absent.xml"))
    assert rc == 1 and err.startswith("error[file-unreadable]")


def test_unsafe_runtime_dir(capsys: pytest.CaptureFixture[str], dirs: Path) -> None:
    (dirs / "run" / "tapvirt").mkdir(mode=0o777)
    (dirs / "run" / "tapvirt").chmod(0o777)
    (dirs / "d.xml").write_text(XML)
    _run(capsys, "define", str(dirs / "d.xml"))
    rc, _, err = _run(capsys, "start", "cli1")
    assert rc == 1 and err.startswith("error[runtime-dir-unsafe]")
    assert "chmod 700" in err


def test_start_failure_leaves_nothing(capsys: pytest.CaptureFixture[str], dirs: Path) -> None:
    """QEMU cannot run: the error names it, the state is shut off, no process stays."""
    from tapvirt.qemu.process import pid_alive
    from tests.support.reaper import become_subreaper, reap_orphans

    become_subreaper()
    (dirs / "d.xml").write_text(XML.replace(
        "<devices>", f"<devices><emulator>{dirs}/no-qemu</emulator>"))
    assert _run(capsys, "define", str(dirs / "d.xml"))[0] == 0
    rc, _, err = _run(capsys, "start", "cli1")
    assert rc == 1 and err.startswith("error[emulator-missing]"), err
    state = json.loads((dirs / "run" / "tapvirt" / "cli1" / "state.json").read_text())
    assert state["state"] == "shut off" and state["reason"] == "failed"
    import time

    deadline = time.monotonic() + 5
    while pid_alive(state["supervisor_pid"]) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not pid_alive(state["supervisor_pid"])
    reap_orphans()
    rc, out, _ = _run(capsys, "domstate", "cli1")
    assert out.strip() == "shut off"


@pytest.mark.parametrize("delay", [0.05, 0.12, 0.2, 0.3, 0.5])
def test_launcher_killed_mid_start(dirs: Path, delay: float) -> None:
    """Kill `tapvirt start` at some point: the next commands repair the state without
    help, the guest can be started and destroyed, and no QEMU is left behind."""
    import os
    import signal
    import subprocess
    import sys
    import time

    from tapvirt.qemu.process import pid_alive
    from tests.support.reaper import become_subreaper, reap_orphans

    become_subreaper()
    (dirs / "d.xml").write_text(XML)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}

    def tv(*argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "tapvirt.cli.main", *argv], env=env,
                              capture_output=True, text=True, timeout=60, check=False)

    assert tv("define", str(dirs / "d.xml")).returncode == 0
    launcher = subprocess.Popen([sys.executable, "-m", "tapvirt.cli.main", "start", "cli1"],
                                env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(delay)
    launcher.send_signal(signal.SIGKILL)
    launcher.wait()
    time.sleep(0.3)  # a supervisor that got its job may still be starting QEMU
    state = tv("domstate", "cli1", "--json")
    assert state.returncode == 0, state.stderr
    if json.loads(state.stdout)["state"] == "shut off":
        started = tv("start", "cli1")
        assert started.returncode == 0, started.stderr
    else:
        assert json.loads(state.stdout)["state"] in ("running", "starting")
    deadline = time.monotonic() + 10
    while json.loads(tv("domstate", "cli1", "--json").stdout)["state"] != "running":
        assert time.monotonic() < deadline
        time.sleep(0.05)
    st = json.loads((dirs / "run" / "tapvirt" / "cli1" / "state.json").read_text())
    assert tv("destroy", "cli1").returncode == 0
    assert not pid_alive(st["qemu_pid"])
    reap_orphans()


@pytest.mark.parametrize("argv", [
    ("start", "--json"),  # missing NAME
    ("start", "cli1", "--json", "--no-such-option"),
    ("list", "--json", "--timeout", "x"),
    ("destroy", "--json", "a", "b"),
    ("--json", "no-such-verb"),
])
def test_usage_errors_honour_json(capsys: pytest.CaptureFixture[str],
                                  argv: tuple[str, ...]) -> None:
    """A wrong command line with --json is a JSON object on stdout (code usage, exit 2),
    never argparse's text."""
    rc, out, err = _run(capsys, *argv)
    assert rc == 2
    res = json.loads(out)
    assert res["ok"] is False and res["error"]["code"] == "usage"
    assert res["error"]["cause"] and "--help" in res["error"]["fix"]
    assert err == ""


def test_usage_errors_without_json_stay_argparse_text(
        capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, err = _run(capsys, "start")
    assert rc == 2 and out == ""
    assert err.startswith("usage: tapvirt start") and "error:" in err


def test_long_runtime_dir_is_refused_upfront(capsys: pytest.CaptureFixture[str], dirs: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """An XDG_RUNTIME_DIR too long for a unix socket path: a named error before anything
    starts (not QEMU's bare "path too long" later), nothing left running."""
    long = dirs / ("r" * 60) / ("u" * 60)
    long.mkdir(parents=True, mode=0o700)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(long))
    (dirs / "d.xml").write_text(XML)
    _run(capsys, "define", str(dirs / "d.xml"))
    rc, out, _ = _run(capsys, "start", "cli1", "--json")
    assert rc == 1
    err = json.loads(out)["error"]
    assert err["code"] == "runtime-path-too-long"
    assert "TAPVIRT_RUNTIME_DIR=" in err["fix"]
    rc, out, _ = _run(capsys, "list", "--all", "--json")
    assert rc == 0 and json.loads(out)["domains"][0]["state"] == "shut off"


EFI_XML = """<domain type='qemu'><name>{name}</name><memory unit='MiB'>32</memory>
<os firmware='efi'><type arch='x86_64' machine='q35'>hvm</type></os><devices/></domain>"""


def test_undefine_with_nvram(capsys: pytest.CaptureFixture[str], dirs: Path,
                             monkeypatch: pytest.MonkeyPatch) -> None:
    """virsh's rule: a domain whose NVRAM file exists is undefined only with --nvram
    (removes it) or --keep-nvram (keeps it); each domain has its own file."""
    monkeypatch.setenv("XDG_DATA_HOME", str(dirs / "data"))
    nvdir = dirs / "data" / "tapvirt" / "nvram"
    for name in ("efi1", "efi2"):
        (dirs / f"{name}.xml").write_text(EFI_XML.format(name=name))
        assert _run(capsys, "define", str(dirs / f"{name}.xml"))[0] == 0
    # not started yet: no file, a plain undefine works
    assert _run(capsys, "undefine", "efi2")[0] == 0
    nvdir.mkdir(parents=True)
    (nvdir / "efi1_VARS.fd").write_bytes(b"vars")
    rc, out, _ = _run(capsys, "undefine", "efi1", "--json")
    assert rc == 1
    err = json.loads(out)["error"]
    assert err["code"] == "nvram-exists" and "--nvram" in err["fix"]
    assert _run(capsys, "undefine", "efi1", "--nvram", "--keep-nvram")[0] == 1
    assert _run(capsys, "dumpxml", "efi1")[0] == 0  # still defined
    assert _run(capsys, "undefine", "efi1", "--keep-nvram")[0] == 0
    assert (nvdir / "efi1_VARS.fd").exists()
    assert _run(capsys, "define", str(dirs / "efi1.xml"))[0] == 0
    assert _run(capsys, "undefine", "efi1", "--nvram")[0] == 0
    assert not (nvdir / "efi1_VARS.fd").exists()
    assert _run(capsys, "list", "--all", "--json")[0] == 0
