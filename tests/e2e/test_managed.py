"""Managed devices (privileged tapvirt): the devices tapvirt creates for a guest go away
with the guest: a managed macvtap (type='direct') is deleted by the supervisor, a managed
tap (non-persistent) vanishes with its last fd, also when QEMU is killed."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support import guest
from tests.support.reaper import become_subreaper, reap_orphans
from tests.support.sandbox import Netns, is_root, unique, wait_for, world_readable_dir

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(shutil.which("qemu-system-x86_64") is None,
                       reason="qemu-system-x86_64 is not installed"),
]
SRC = Path(__file__).resolve().parents[2] / "src"


@pytest.fixture
def root_env(netns: Netns) -> Iterator[dict[str, Any]]:
    if not is_root():
        pytest.skip("needs root")
    become_subreaper()
    work = world_readable_dir("tv-managed-")
    (work / "xdg").mkdir(mode=0o700)
    env = {**os.environ, "XDG_RUNTIME_DIR": str(work / "xdg"),
           "XDG_CONFIG_HOME": str(work / "cfg"), "PYTHONPATH": str(SRC)}
    try:
        yield {"work": work, "env": env, "netns": netns}
    finally:
        for pid in netns.exec("ip", "netns", "pids", netns.name, check=False).stdout.split():
            with contextlib.suppress(OSError, ValueError):
                os.kill(int(pid), signal.SIGKILL)
        reap_orphans()
        shutil.rmtree(work, ignore_errors=True)


def _tv(r: dict[str, Any], *args: str) -> subprocess.CompletedProcess[str]:
    import sys

    return subprocess.run(["ip", "netns", "exec", r["netns"].name, sys.executable, "-m",
                           "tapvirt.cli.main", *args], env=r["env"], capture_output=True,
                          text=True, timeout=120, check=False)


def _xml(name: str, iface: str) -> str:
    image = guest.build()
    return (f"<domain type='qemu'><name>{name}</name><memory unit='MiB'>128</memory>"
            f"<os><type arch='x86_64' machine='pc'>hvm</type><kernel>{image.kernel}</kernel>"
            f"<initrd>{image.initrd}</initrd><cmdline>{image.cmdline()}</cmdline></os>"
            f"<devices>{iface}</devices></domain>")


def test_managed_macvtap_and_tap_are_removed_at_stop(root_env: dict[str, Any]) -> None:
    ns: Netns = root_env["netns"]
    a, b = unique("tvma"), unique("tvmb")
    ns.ip("link", "add", a, "type", "veth", "peer", "name", b)
    ns.ip("link", "set", a, "up")
    ns.ip("link", "set", b, "up")
    mvt, tap = unique("tvmm"), unique("tvmt")
    xml = root_env["work"] / "m.xml"
    xml.write_text(_xml("tv-managed", (
        f"<interface type='direct'><mac address='52:54:00:e2:01:01'/>"
        f"<source dev='{b}' mode='bridge'/><target dev='{mvt}'/><model type='virtio'/>"
        f"</interface><interface type='ethernet'><mac address='52:54:00:e2:01:02'/>"
        f"<target dev='{tap}'/><model type='virtio'/></interface>")))
    for round_ in range(2):
        proc = _tv(root_env, "create", str(xml))
        assert proc.returncode == 0, proc.stderr
        assert ns.link_json(mvt) is not None and ns.link_json(tap) is not None
        rows = {r["device"] for r in json.loads(
            _tv(root_env, "domiflist", "tv-managed", "--json").stdout)["interfaces"]}
        assert rows == {mvt, tap}
        live = _tv(root_env, "dumpxml", "tv-managed").stdout
        assert f"<target dev='{mvt}'/>" in live and f"<target dev='{tap}'/>" in live
        assert "<alias name='net0'/>" in live and "<alias name='net1'/>" in live
        if round_ == 0:
            assert _tv(root_env, "destroy", "tv-managed").returncode == 0
        else:  # QEMU killed: the supervisor still cleans up
            st = json.loads((root_env["work"] / "xdg" / "tapvirt" /
                                           "tv-managed" / "state.json").read_text())
            os.kill(st["qemu_pid"], signal.SIGKILL)
        assert wait_for(lambda: ns.link_json(mvt) is None and ns.link_json(tap) is None, 10)
        # transient: forgotten once stopped
        assert wait_for(lambda: not (root_env["work"] / "xdg" / "tapvirt" /
                                     "tv-managed").exists(), 10)
    assert ns.link_json(b) is not None  # the lower device is not ours: untouched
