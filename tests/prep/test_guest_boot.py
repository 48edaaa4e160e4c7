"""End to end across the seam: tapvirt-prep (root) makes a tap on a bridge; the
unprivileged user opens it with the launcher's host layer and boots the test guest on
the fd (QEMU TCG, no vhost); the guest pings the bridge's address."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.prep.conftest import Prep
from tests.support import guest
from tests.support.sandbox import AsUser, Netns

pytestmark = pytest.mark.e2e

QEMU_ON_TAP = r"""
import subprocess
from tapvirt.host.linux import LinuxHost
fds = LinuxHost().open_tap({name!r}, tun_node={tun_node!r}, vnet_hdr=True, queues=1)
fd = fds.release()[0]
argv = ["qemu-system-x86_64", "-accel", "tcg", "-machine", "pc", "-m", "256",
        "-nodefaults", "-no-user-config", "-display", "none", "-no-reboot",
        "-serial", "stdio", "-kernel", {kernel!r}, "-initrd", {initrd!r},
        "-append", {cmdline!r},
        "-netdev", f"tap,id=n0,fd={{fd}},vhost=off",
        "-device", "virtio-net-pci,netdev=n0,mac=52:54:00:0e:2e:01"]
try:
    out = subprocess.run(argv, pass_fds=[fd], capture_output=True, text=True, timeout=150)
    print(out.stdout[-3000:])
    print(out.stderr[-1000:])
except subprocess.TimeoutExpired as exc:
    print("TIMEOUT", (exc.stdout or b"")[-3000:])
"""


def test_guest_boots_and_pings_over_a_prepared_tap(
    prep: Prep, netns: Netns, as_user: AsUser, tun_node: Path
) -> None:
    image = guest.cached()
    if image is None or shutil.which("qemu-system-x86_64") is None:
        pytest.skip("needs QEMU and the cached test guest (python -m tests.support.guest build)")
    netns.ip("link", "add", "br0", "type", "bridge")
    netns.ip("addr", "add", "10.213.0.1/24", "dev", "br0")
    netns.ip("link", "set", "br0", "up")
    prep.ok("tap", "gt0", "--user", as_user.user.name, "--bridge", "br0",
            "--guest-mac", "52:54:00:0e:2e:01")
    cmdline = image.cmdline(ip="10.213.0.2/24", peer="10.213.0.1", poweroff_after=3)
    code = QEMU_ON_TAP.format(name="gt0", tun_node=str(tun_node), kernel=str(image.kernel),
                              initrd=str(image.initrd), cmdline=cmdline)
    proc = as_user.python(code, timeout=200)
    assert "TV-MARKER" in proc.stdout, (proc.stdout, proc.stderr)
    assert "TV-PING-OK" in proc.stdout, proc.stdout
