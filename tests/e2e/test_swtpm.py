"""End to end: an emulated `<tpm>` backed by swtpm, run as the unprivileged user
(issue 10, tests 6 and 7's missing swtpm).

swtpm runs as the user while the guest runs, its state is created once in the user's data
directory (0700/0600) and survives restarts, the guest kernel sees /dev/tpm0; swtpm is
gone after destroy, after QEMU is SIGKILLed and after the supervisor is SIGKILLed (then
`destroy` ends it); `undefine --tpm` removes the state; a host without swtpm gets
`swtpm-missing` and nothing keeps running.
"""

from __future__ import annotations

import os
import shutil
import signal
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.lab import Lab, module_lab, wait_until

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(shutil.which("qemu-system-x86_64") is None,
                       reason="qemu-system-x86_64 is not installed"),
    pytest.mark.skipif(shutil.which("swtpm") is None or shutil.which("swtpm_setup") is None,
                       reason="swtpm is not installed: scripts/install-deps"),
]

UUID = "6f1c2a9e-5b3d-4c7e-9a10-2b3c4d5e6f70"


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    yield from module_lab()


def _xml(lab: Lab, name: str, uuid: str, model: str = "tpm-crb",
         backend: str = "<backend type='emulator' version='2.0'/>") -> str:
    # no "quiet": the kernel's TPM messages are part of the evidence
    xml = lab.domain_xml(name, "", "console=ttyS0 panic=-1 tvmode=idle tvgw=none tvshell=1")
    return xml.replace(f"<name>{name}</name>", f"<name>{name}</name><uuid>{uuid}</uuid>").replace(
        "</devices>", f"  <tpm model='{model}'>{backend}</tpm>\n  </devices>")


def _state_root(lab: Lab) -> Path:
    return lab.user.home / ".local/share/tapvirt/swtpm"


def _swtpm(lab: Lab, name: str) -> dict[str, Any]:
    helpers = lab.state(name).get("helpers") or []
    assert [h["name"] for h in helpers] == ["swtpm"], helpers
    h: dict[str, Any] = helpers[0]
    return h


def _alive(pid: int, start: int) -> bool:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return False
    return fields[0] != "Z" and int(fields[19]) == start


def _in_guest(lab: Lab, name: str, command: str, marker: str) -> str:
    """Run a command in the guest's console shell (stdin not a tty) and wait for marker."""
    lab.as_user.run([*_tapvirt(lab), "console", name],
                    input=f"\n{command}; echo {marker}-$?\n", timeout=60)
    return lab.wait_console(name, rf"{marker}-\d+", timeout=60).group(0)


def _tapvirt(lab: Lab) -> list[str]:
    from tests.support.sandbox import unprivileged_python

    return [unprivileged_python(), "-m", "tapvirt.cli.main"]


def test_swtpm_runs_as_the_user_and_the_guest_sees_its_tpm(lab: Lab) -> None:
    name = "tv-tpm"
    lab.define(name, _xml(lab, name, UUID))
    lab.tv("start", name)
    h = _swtpm(lab, name)
    assert _alive(h["pid"], h["start"])
    assert os.stat(f"/proc/{h['pid']}").st_uid == lab.user.uid
    argv = Path(f"/proc/{h['pid']}/cmdline").read_bytes().split(b"\0")
    assert argv[:2] == [b"swtpm", b"socket"] and b"--tpm2" in argv and b"--terminate" in argv
    sock = lab.rundir(name) / "swtpm.sock"
    assert stat.S_ISSOCK(sock.stat().st_mode)
    # state: created once, private, in the user's data directory
    tpm2 = _state_root(lab) / UUID / "tpm2"
    assert (tpm2 / "tpm2-00.permall").is_file()
    for d in (tpm2, tpm2.parent):
        assert stat.S_IMODE(d.stat().st_mode) == 0o700 and d.stat().st_uid == lab.user.uid
    assert stat.S_IMODE((tpm2 / "tpm2-00.permall").stat().st_mode) == 0o600
    # the guest's kernel (tpm_crb built in) found the TPM
    lab.wait_console(name, r"TV-MARKER", timeout=120)
    got = _in_guest(lab, name, "ls /dev/tpm0 /dev/tpmrm0 && "
                    "cat /sys/class/tpm/tpm0/tpm_version_major", "TV-TPM")
    assert got == "TV-TPM-0", lab.console(name)[-1500:]
    assert "\n2\r\n" in lab.console(name) or "\n2\n" in lab.console(name)
    # destroy: swtpm ends with the guest
    lab.tv("destroy", name)
    assert wait_until(lambda: not _alive(h["pid"], h["start"]), 10)
    assert lab.state(name).get("helpers") == []


def test_tpm_state_survives_a_restart(lab: Lab) -> None:
    name = "tv-tpm"
    tpm2 = _state_root(lab) / UUID / "tpm2"
    log = _state_root(lab) / UUID / "swtpm.log"
    manufactured = log.read_text().count("Starting vTPM manufacturing")
    assert manufactured == 1
    lab.tv("start", name)
    h = _swtpm(lab, name)
    assert _alive(h["pid"], h["start"])
    # swtpm_setup did not run again: the same TPM (its EK) serves the second boot
    assert log.read_text().count("Starting vTPM manufacturing") == 1
    assert (tpm2 / "tpm2-00.permall").exists()
    lab.tv("destroy", name)
    assert (tpm2 / "tpm2-00.permall").is_file()


def test_swtpm_gone_after_qemu_sigkill(lab: Lab) -> None:
    name = "tv-tpm"
    lab.tv("start", name)
    h = _swtpm(lab, name)
    qemu = lab.state(name)["qemu_pid"]
    os.kill(qemu, signal.SIGKILL)
    assert wait_until(lambda: lab.tv_json("domstate", name)["state"] == "shut off", 30)
    assert wait_until(lambda: not _alive(h["pid"], h["start"]), 10)
    st = lab.state(name)
    assert st["reason"] == "crashed" and st["helpers"] == []


def test_swtpm_gone_after_supervisor_sigkill_and_destroy(lab: Lab) -> None:
    name = "tv-tpm"
    lab.tv("start", name)
    h = _swtpm(lab, name)
    os.kill(lab.state(name)["supervisor_pid"], signal.SIGKILL)
    # QEMU and swtpm outlive it (the guest keeps running, unsupervised) ...
    assert wait_until(lambda: lab.tv_json("domstate", name)["reason"] == "unsupervised", 10)
    assert _alive(h["pid"], h["start"])
    # ... until whoever reconciles ends them, by pid and start time
    lab.tv("destroy", name)
    assert wait_until(lambda: not _alive(h["pid"], h["start"]), 10)
    assert lab.state(name)["helpers"] == []


def test_swtpm_crash_is_reported(lab: Lab) -> None:
    name = "tv-tpm"
    lab.tv("start", name)
    h = _swtpm(lab, name)
    os.kill(h["pid"], signal.SIGKILL)
    assert wait_until(lambda: any(w.get("code") == "swtpm-ended"
                                  for w in lab.state(name).get("warnings", [])), 10)
    st = lab.state(name)
    assert st["state"] == "running" and st["helpers"] == []
    warning = next(w for w in st["warnings"] if w["code"] == "swtpm-ended")
    assert "SIGKILL" in warning["cause"]
    lab.tv("destroy", name)


def test_undefine_removes_or_keeps_the_tpm_state(lab: Lab) -> None:
    name = "tv-tpm"
    path = _state_root(lab) / UUID
    assert path.is_dir()
    out = lab.tv("undefine", name, "--keep-tpm").stdout
    assert path.is_dir() and "removed" not in out
    lab.define(name, _xml(lab, name, UUID))
    out = lab.tv("undefine", name, "--tpm").stdout
    assert not path.exists() and "TPM state" in out


def test_tpm_1_2_on_tis(lab: Lab) -> None:
    name, uuid = "tv-tpm12", "6f1c2a9e-5b3d-4c7e-9a10-2b3c4d5e6f71"
    lab.define(name, _xml(lab, name, uuid, "tpm-tis", "<backend type='emulator' version='1.2'/>"))
    lab.tv("start", name)
    h = _swtpm(lab, name)
    argv = Path(f"/proc/{h['pid']}/cmdline").read_bytes().split(b"\0")
    assert b"--tpm2" not in argv
    assert (_state_root(lab) / uuid / "tpm1.2" / "tpm-00.permall").is_file()
    lab.tv("destroy", name)
    lab.tv("undefine", name)  # no persistent_state: the state goes with the definition
    assert not (_state_root(lab) / uuid).exists()


def test_missing_swtpm_is_a_named_error_and_nothing_runs(lab: Lab) -> None:
    name, uuid = "tv-notpm", "6f1c2a9e-5b3d-4c7e-9a10-2b3c4d5e6f72"
    bindir = lab.scratch / "bin-no-swtpm"
    bindir.mkdir(mode=0o755)
    os.symlink(shutil.which("qemu-system-x86_64") or "", bindir / "qemu-system-x86_64")
    lab.define(name, _xml(lab, name, uuid))
    proc = lab.as_user.tapvirt("start", name, "--tun-node", str(lab.tun),
                               env={"PATH": str(bindir)})
    assert proc.returncode != 0
    assert "swtpm-missing" in proc.stderr and "apt-get install swtpm swtpm-tools" in proc.stderr
    assert "Traceback" not in proc.stderr
    st = lab.tv_json("domstate", name)
    assert st["state"] == "shut off"
    assert not any(_owned_by(lab, p) for p in _pids_naming(str(lab.rundir(name))))
    lab.tv("undefine", name)


def _pids_naming(needle: str) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if needle.encode() in Path(f"/proc/{entry}/cmdline").read_bytes():
                    found.append(int(entry))
            except OSError:
                continue
    return found


def _owned_by(lab: Lab, pid: int) -> bool:
    try:
        return os.stat(f"/proc/{pid}").st_uid == lab.user.uid
    except OSError:
        return False


def test_no_leftovers(lab: Lab) -> None:
    proc = subprocess.run(["ps", "-u", str(lab.user.uid), "-o", "pid=,stat=,args="],
                          capture_output=True, text=True, check=False)
    live = [line for line in proc.stdout.splitlines() if " Z" not in line]
    assert not [line for line in live if "swtpm" in line or "qemu" in line], proc.stdout
