"""Faults and limits, end to end: tapvirt run by an unprivileged user on devices root
precreated in a namespace (issue 13: fd counts, destroy during start, full and
unwritable runtime directories, killed processes).

Every case ends in a consistent, named state: the error has its own code, `list` works,
precreated devices are unchanged, and no process, fd or runtime file is left behind.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.lab import Lab, wait_until
from tests.support.reaper import become_subreaper, reap_orphans
from tests.support.sandbox import is_root, unprivileged_python

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(shutil.which("qemu-system-x86_64") is None,
                       reason="qemu-system-x86_64 is not installed"),
]


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    if not is_root():
        pytest.skip("needs root: creates network namespaces, users and devices")
    become_subreaper()
    try:
        with Lab.create() as lab:
            yield lab
    finally:
        reap_orphans()


def _iface(mac: str, dev: str, queues: int | None = None) -> str:
    driver = f"\n      <driver queues='{queues}'/>" if queues else ""
    return (f"    <interface type='ethernet'>\n      <mac address='{mac}'/>\n"
            f"      <target dev='{dev}' managed='no'/>\n"
            f"      <model type='virtio'/>{driver}\n    </interface>")


def _holders(pid: int, dev: str) -> int:
    """How many of the process's fds are attached to tap `dev`."""
    n = 0
    for f in Path(f"/proc/{pid}/fdinfo").iterdir():
        try:
            if f"iff:\t{dev}\n" in f.read_text():
                n += 1
        except OSError:
            continue
    return n


def _runtime_files(lab: Lab, name: str) -> list[str]:
    d = lab.rundir(name)
    return sorted(p.name for p in d.iterdir()) if d.is_dir() else []


@pytest.mark.parametrize("layout", [(256,), (64, 64, 64, 64, 64)],
                         ids=["one-nic-256-queues", "five-nics-64-queues"])
def test_more_fds_than_one_scm_rights_message(lab: Lab, layout: tuple[int, ...]) -> None:
    """256 queues (the kernel's maximum) on one tap, or 5 x 64: more than the 253 fds one
    SCM_RIGHTS message carries. The start works and QEMU holds every queue."""
    name = f"tv-fds{len(layout)}"
    taps = [lab.tap(multi_queue=True) for _ in layout]
    before = {t: lab.snapshot(t) for t in taps}
    ifaces = "\n".join(_iface(f"52:54:00:13:07:{i:02x}", t, q)
                       for i, (t, q) in enumerate(zip(taps, layout, strict=True)))
    lab.define(name, lab.domain_xml(name, ifaces, lab.image.cmdline(ip="10.213.0.99/24")))
    proc = lab.tv("start", name, "--paused", "--json", check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    qemu = json.loads(proc.stdout)["qemu_pid"]
    try:
        assert [_holders(qemu, t) for t in taps] == list(layout)
        st = lab.state(name)
        assert _holders(st["supervisor_pid"], taps[0]) in (0, layout[0])  # kept for restarts
    finally:
        lab.tv("destroy", name)
    assert {t: lab.snapshot(t) for t in taps} == before


def test_destroy_during_start_says_so(lab: Lab) -> None:
    """`destroy` while `start` runs: the start reports destroyed-while-starting (not
    QEMU's SIGTERM), the state is shut off (destroyed), the device is unchanged."""
    import subprocess

    name = "tv-dds"
    tap = lab.tap()
    before = lab.snapshot(tap)
    lab.define(name, lab.domain_xml(name, _iface("52:54:00:13:0b:01", tap),
                                    lab.image.cmdline(ip="10.213.0.98/24")))
    outcomes: list[str] = []
    for delay in (0.0, 0.15, 0.4):
        start = subprocess.Popen(
            lab.as_user.argv([unprivileged_python(), "-m", "tapvirt.cli.main", "start", name,
                              "--json", "--tun-node", str(lab.tun)]),
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        time.sleep(delay)
        wait_until((lab.rundir(name) / "state.json").exists, 10, 0.005)
        d = lab.tv("destroy", name, "--json", check=False)
        out, err = start.communicate(timeout=60)
        if start.returncode == 0:  # the start won the race: destroy stopped a running guest
            assert json.loads(d.stdout)["state"] == "shut off"
            outcomes.append("started-then-destroyed")
        else:
            res = json.loads(out)
            assert res["error"]["code"] == "destroyed-while-starting", out + err
            assert "destroyed while starting" in res["error"]["cause"]
            outcomes.append("destroyed-while-starting")
        st = lab.tv_json("domstate", name, "--reason")
        assert st["state"] == "shut off" and st["reason"] == "destroyed", st
        assert lab.snapshot(tap) == before
    assert "destroyed-while-starting" in outcomes, outcomes
    assert lab.tv("start", name, "--paused", check=False).returncode == 0
    lab.tv("destroy", name)
