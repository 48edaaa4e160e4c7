"""The seam itself: what tapvirt-prep made, the unprivileged launcher's host layer
(`tapvirt.host.linux.LinuxHost`, run as another uid with no capabilities) can use."""

from __future__ import annotations

from pathlib import Path

from tests.prep.conftest import Prep
from tests.support.sandbox import AsUser, Netns

LAUNCHER = r"""
from tapvirt.host.linux import LinuxHost
host = LinuxHost()
link = host.lookup({name!r})
tun = link.tun
print(link.kind, link.up, link.master, tun.owner if tun else None,
      tun.multi_queue if tun else None, link.mac)
if {node!r}:
    fds = host.open_macvtap(link, node={node!r}, vnet_hdr=True, queues={queues})
else:
    fds = host.open_tap({name!r}, tun_node={tun_node!r}, vnet_hdr=True, queues={queues})
print(len(fds))
fds.close()
"""


def _launch(as_user: AsUser, name: str, *, tun_node: str = "", node: str = "",
            queues: int = 1) -> list[list[str]]:
    code = LAUNCHER.format(name=name, node=node, tun_node=tun_node, queues=queues)
    proc = as_user.python(code)
    assert proc.returncode == 0, proc.stderr
    return [line.split() for line in proc.stdout.splitlines()]


def test_launcher_opens_prepared_taps(
    prep: Prep, netns: Netns, as_user: AsUser, tun_node: Path
) -> None:
    netns.ip("link", "add", "br0", "type", "bridge")
    uid = as_user.user.uid
    mac = prep.ok("tap", "lt0", "--user", as_user.user.name, "--bridge", "br0")["device"]["mac"]
    prep.ok("tap", "lt1", "--user", as_user.user.name, "--queues", "4")
    assert _launch(as_user, "lt0", tun_node=str(tun_node)) == [
        ["tap", "True", "br0", str(uid), "False", mac], ["1"]]
    assert _launch(as_user, "lt1", tun_node=str(tun_node), queues=4)[1] == ["4"]


def test_launcher_opens_a_prepared_macvtap_node(
    prep: Prep, netns: Netns, as_user: AsUser
) -> None:
    netns.ip("link", "add", "ve0", "type", "veth", "peer", "name", "ve1")
    for private in (False, True):
        name = f"lm{int(private)}"
        mac = f"52:54:00:00:00:0{int(private)}"
        extra = ("--private-node",) if private else ()
        node = prep.ok("macvtap", name, "--user", as_user.user.name, "--link", "ve0",
                       "--mac", mac, *extra)["device"]["node"]
        out = _launch(as_user, name, node=node, queues=2)
        assert out == [["macvtap", "True", "None", "None", "None", mac], ["2"]]
