"""End to end across the seam: tapvirt-prep (root) makes a tap on a bridge, or a
macvtap on a veth; the unprivileged user opens it with the launcher's host layer and
boots the test guest on the fd (QEMU TCG, no vhost); the guest pings the host side."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.prep.conftest import Prep
from tests.support import guest
from tests.support.sandbox import AsUser, Netns

pytestmark = pytest.mark.e2e

QEMU_ON_DEVICE = r"""
import subprocess
from tapvirt.host.linux import LinuxHost
host = LinuxHost()
if {node!r}:
    fds = host.open_macvtap(host.lookup({name!r}), node={node!r}, vnet_hdr=True, queues=1)
else:
    fds = host.open_tap({name!r}, tun_node={tun_node!r}, vnet_hdr=True, queues=1)
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


def _image() -> guest.GuestImage:
    image = guest.cached()
    if image is None or shutil.which("qemu-system-x86_64") is None:
        pytest.skip("needs QEMU and the cached test guest (python -m tests.support.guest build)")
    return image


def _boot(as_user: AsUser, image: guest.GuestImage, name: str, *, tun_node: str = "",
          node: str = "") -> None:
    cmdline = image.cmdline(ip="10.213.0.2/24", peer="10.213.0.1", poweroff_after=3)
    code = QEMU_ON_DEVICE.format(name=name, tun_node=tun_node, node=node,
                                 kernel=str(image.kernel), initrd=str(image.initrd),
                                 cmdline=cmdline)
    proc = as_user.python(code, timeout=200)
    assert "TV-MARKER" in proc.stdout, (proc.stdout, proc.stderr)
    assert "TV-PING-OK" in proc.stdout, proc.stdout


def test_guest_boots_and_pings_over_a_prepared_tap(
    prep: Prep, netns: Netns, as_user: AsUser, tun_node: Path
) -> None:
    image = _image()
    netns.ip("link", "add", "br0", "type", "bridge")
    netns.ip("addr", "add", "10.213.0.1/24", "dev", "br0")
    netns.ip("link", "set", "br0", "up")
    prep.ok("tap", "gt0", "--user", as_user.user.name, "--bridge", "br0",
            "--guest-mac", "52:54:00:0e:2e:01")
    _boot(as_user, image, "gt0", tun_node=str(tun_node))


def test_guest_boots_and_pings_over_a_prepared_macvtap(
    prep: Prep, netns: Netns, as_user: AsUser
) -> None:
    image = _image()
    netns.ip("link", "add", "ve0", "type", "veth", "peer", "name", "ve1")
    netns.ip("addr", "add", "10.213.0.1/24", "dev", "ve1")
    netns.ip("link", "set", "ve1", "up")
    netns.ip("link", "set", "ve0", "up")
    node = prep.ok("macvtap", "gm0", "--user", as_user.user.name, "--link", "ve0",
                   "--mac", "52:54:00:0e:2e:01")["device"]["node"]
    _boot(as_user, image, "gm0", node=node)
