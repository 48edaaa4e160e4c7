"""A full or read-only runtime directory (issue 13, item 6), on a real small tmpfs.

Each case runs in a private mount namespace (`unshare --mount`) with a 1 MiB tmpfs as
XDG_RUNTIME_DIR, so the host's file systems are never filled; the mount goes away with
the namespace. Guests are real QEMUs (no guest OS: started paused).

Properties: `start` on a full disk fails with runtime-dir-full naming the path and the
fix, and leaves no process; a disk that fills while a guest runs does not stop
`destroy` from stopping it and reporting "destroyed"; `list` and `domstate` keep working
whatever the disk; once space is back, everything works again.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.skipif(
    shutil.which("qemu-system-x86_64") is None or shutil.which("unshare") is None,
    reason="needs qemu-system-x86_64 and unshare")

# Runs inside the private mount namespace: mounts the tmpfs, plays the scenario given as
# argv[1] through the real CLI, prints one JSON object of observations.
SCENARIO = textwrap.dedent(r'''
    import contextlib, io, json, os, signal, subprocess, sys, time
    from pathlib import Path
    from tapvirt.cli.main import main
    from tests.support.reaper import become_subreaper, reap_orphans

    import tempfile
    case, base, qemu = sys.argv[1], Path(sys.argv[2]), sys.argv[3]
    run = Path(tempfile.mkdtemp(prefix="tvf-"))  # short: the QMP socket path must fit
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m,mode=0700", "tvfull", str(run)],
                   check=True)
    os.environ.update(XDG_RUNTIME_DIR=str(run), XDG_CONFIG_HOME=str(base / "cfg"))
    os.environ.pop("TAPVIRT_RUNTIME_DIR", None)
    become_subreaper()
    obs = {}

    def tv(*args):
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            rc = main([*args, "--json"] if args[0] != "define" else list(args))
        text = out.getvalue()
        return rc, (json.loads(text) if text.strip().startswith("{") else text), err.getvalue()

    filler = run / "filler"
    def fill():
        fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            while True:
                os.write(fd, b"x" * 65536)
        except OSError:
            pass
        finally:
            os.close(fd)
        # the last pages too: small writes until nothing fits
        for i in range(64):
            try:
                (run / f"f{i}").write_bytes(b"y" * 512)
            except OSError:
                break

    def unfill():
        for p in run.glob("f*"):
            p.unlink()
        filler.unlink(missing_ok=True)

    def qemus():
        found = []
        for d in Path("/proc").iterdir():
            if d.name.isdigit():
                with contextlib.suppress(OSError):
                    if str(run).encode() in (d / "cmdline").read_bytes():
                        st = (d / "stat").read_text().rsplit(")", 1)[1].split()[0]
                        if st not in ("Z", "X"):
                            found.append(int(d.name))
        return found

    xml = base / "g.xml"
    xml.write_text(f"""<domain type='qemu'><name>g1</name><memory unit='MiB'>32</memory>
    <os><type arch='x86_64' machine='pc'>hvm</type></os><devices>
    <emulator>{qemu}</emulator></devices></domain>""")
    assert tv("define", str(xml))[0] == 0
    try:
        if case == "full-before-start":
            (run / "tapvirt").mkdir(mode=0o700)
            fill()
            obs["start"] = tv("start", "g1", "--paused")[:2]
            obs["list"] = tv("list", "--all")[:2]
            obs["domstate"] = tv("domstate", "g1")[:2]
            obs["processes"] = qemus()
            unfill()
            obs["start_after"] = tv("start", "g1", "--paused")[:2]
            obs["destroy_after"] = tv("destroy", "g1")[:2]
        elif case == "fills-while-running":
            obs["start"] = tv("start", "g1", "--paused")[:2]
            fill()
            obs["list_full"] = tv("list")[:2]
            obs["destroy"] = tv("destroy", "g1")[:2]
            time.sleep(0.2)
            obs["processes"] = qemus()
            obs["domstate"] = tv("domstate", "g1", "--reason")[:2]
            obs["list"] = tv("list", "--all")[:2]
            unfill()
            obs["start_after"] = tv("start", "g1", "--paused")[:2]
            obs["destroy_after"] = tv("destroy", "g1")[:2]
        elif case == "killed-on-full-disk":
            # the supervisor and QEMU die while nothing can be written: reads repair the
            # state in memory, never crash
            rc, res, err = tv("start", "g1", "--paused")
            obs["start"] = [rc, res]
            assert rc == 0, (res, err)
            st = json.loads((run / "tapvirt" / "g1" / "state.json").read_text())
            fill()
            os.kill(st["supervisor_pid"], signal.SIGKILL)
            os.kill(st["qemu_pid"], signal.SIGKILL)
            time.sleep(0.3)
            reap_orphans()
            obs["list"] = tv("list", "--all")[:2]
            obs["domstate"] = tv("domstate", "g1", "--reason")[:2]
            obs["destroy"] = tv("destroy", "g1")[:2]
            unfill()
            obs["start_after"] = tv("start", "g1", "--paused")[:2]
            obs["destroy_after"] = tv("destroy", "g1")[:2]
        elif case == "read-only":
            # (a file system with files open for writing cannot become read-only: the
            # running guest's logs; so it goes read-only between two runs)
            obs["start"] = tv("start", "g1", "--paused")[:2]
            obs["destroy"] = tv("destroy", "g1")[:2]
            subprocess.run(["mount", "-o", "remount,ro", str(run)], check=True)
            obs["list"] = tv("list", "--all")[:2]
            obs["start_ro"] = tv("start", "g1", "--paused")[:2]
            obs["processes"] = qemus()
            subprocess.run(["mount", "-o", "remount,rw", str(run)], check=True)
            obs["start_after"] = tv("start", "g1", "--paused")[:2]
            obs["destroy_after"] = tv("destroy", "g1")[:2]
    finally:
        for pid in qemus():
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.2)
        reap_orphans()
        obs["left_over"] = qemus()
        subprocess.run(["umount", "-l", str(run)], check=False)
        run.rmdir()
    print("RESULT " + json.dumps(obs))
''')


def _scenario(case: str, tmp_path: Path) -> dict[str, Any]:
    base = tmp_path / case
    base.mkdir(mode=0o700)
    script = base / "scenario.py"
    script.write_text(SCENARIO)
    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": f"{root / 'src'}{os.pathsep}{root}"}
    proc = subprocess.run(
        ["unshare", "--mount", "--propagation", "private", sys.executable, str(script), case,
         str(base), shutil.which("qemu-system-x86_64") or ""],
        capture_output=True, text=True, timeout=180, env=env, check=False)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    assert proc.returncode == 0 and lines, proc.stdout + proc.stderr
    obs: dict[str, Any] = json.loads(lines[-1][len("RESULT "):])
    return obs


def _ok(step: list[Any]) -> dict[str, Any]:
    rc, res = step
    assert rc == 0 and isinstance(res, dict) and res["ok"], step
    return res


def _states(step: list[Any]) -> dict[str, str]:
    return {d["name"]: d["state"] for d in _ok(step)["domains"]}


def test_start_on_a_full_runtime_dir(tmp_path: Path) -> None:
    obs = _scenario("full-before-start", tmp_path)
    rc, res = obs["start"]
    assert rc == 1 and res["error"]["code"] == "runtime-dir-full", res
    assert "/tapvirt/g1/" in res["error"]["subject"] and "df -h" in res["error"]["fix"]
    assert _states(obs["list"]) == {"g1": "shut off"}
    assert _ok(obs["domstate"])["state"] == "shut off"
    assert obs["processes"] == [] and obs["left_over"] == []
    assert _ok(obs["start_after"])["state"] == "paused"
    assert _ok(obs["destroy_after"])["state"] == "shut off"


def test_disk_fills_while_the_guest_runs(tmp_path: Path) -> None:
    obs = _scenario("fills-while-running", tmp_path)
    assert _ok(obs["start"])["state"] == "paused"
    assert _states(obs["list_full"]) == {"g1": "paused"}
    assert _ok(obs["destroy"])["state"] == "shut off"
    assert obs["processes"] == []
    st = _ok(obs["domstate"])
    assert st["state"] == "shut off" and st["reason"] == "destroyed", st
    assert _states(obs["list"]) == {"g1": "shut off"}
    assert _ok(obs["start_after"])["state"] == "paused"
    assert _ok(obs["destroy_after"])["state"] == "shut off"
    assert obs["left_over"] == []


def test_processes_killed_while_the_disk_is_full(tmp_path: Path) -> None:
    obs = _scenario("killed-on-full-disk", tmp_path)
    assert _ok(obs["start"])["state"] == "paused"
    assert _states(obs["list"]) == {"g1": "shut off"}
    assert _ok(obs["domstate"])["state"] == "shut off"
    rc, res = obs["destroy"]
    assert rc == 1 and res["error"]["code"] == "domain-not-running"
    assert _ok(obs["start_after"])["state"] == "paused"
    assert obs["left_over"] == []


def test_read_only_runtime_dir(tmp_path: Path) -> None:
    obs = _scenario("read-only", tmp_path)
    assert _ok(obs["start"])["state"] == "paused"
    assert _ok(obs["destroy"])["state"] == "shut off"
    assert _states(obs["list"]) == {"g1": "shut off"}
    rc, res = obs["start_ro"]
    assert rc == 1 and res["error"]["code"] == "runtime-dir-unwritable", res
    assert obs["processes"] == []
    assert _ok(obs["start_after"])["state"] == "paused"
    assert _ok(obs["destroy_after"])["state"] == "shut off"
    assert obs["left_over"] == []
