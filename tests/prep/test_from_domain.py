"""`tapvirt-prep from-domain`: every managed='no' interface of a libvirt domain gets its
device, with the domain's queues, MTU and MAC rules, all or nothing."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import pytest

from tests.prep.conftest import Prep, allow_user, link_names
from tests.support.sandbox import Netns, User

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("tapvirt.conf.parse") is None,
    reason="needs tapvirt.conf.parse (the conf layer) on this branch",
)

DOMAIN = """<domain type='qemu'>
  <name>guest</name>
  <memory unit='KiB'>131072</memory>
  <os><type arch='x86_64' machine='pc'>hvm</type></os>
  <devices>
    <interface type='ethernet'>
      <mac address='52:54:00:00:00:01'/>
      <target dev='fdtap0' managed='no'/>
      <model type='virtio'/>
      <driver queues='2'/>
      <mtu size='1400'/>
    </interface>
    <interface type='ethernet'>
      <mac address='52:54:00:00:00:02'/>
      <target dev='fdtap1' managed='no'/>
      <model type='virtio'/>
    </interface>
    <interface type='ethernet'>
      <mac address='52:54:00:00:00:03'/>
      <target dev='fdmvt0' managed='no'/>
      <model type='virtio'/>
    </interface>
    <interface type='user'>
      <mac address='52:54:00:00:00:04'/>
      <model type='virtio'/>
    </interface>
  </devices>
</domain>
"""
GUEST_MACS = {"52:54:00:00:00:01", "52:54:00:00:00:02", "52:54:00:00:00:03"}
DEVICES = {"fdtap0", "fdtap1", "fdmvt0"}


@pytest.fixture
def domain(scratch: Path, netns: Netns) -> Path:
    netns.ip("link", "add", "br0", "type", "bridge")
    netns.ip("link", "add", "ve0", "type", "veth", "peer", "name", "ve1")
    path = scratch / "guest.xml"
    path.write_text(DOMAIN)
    path.chmod(0o644)
    return path


def _results(run: Any) -> dict[str, dict[str, Any]]:
    assert run.rc == 0, (run.stdout, run.stderr)
    return {r["name"]: r for r in run.out["results"]}


def test_every_unmanaged_interface_gets_its_device(
    prep: Prep, netns: Netns, domain: Path, unpriv_user: User
) -> None:
    run = prep.run("from-domain", str(domain), "--user", unpriv_user.name, "--bridge", "br0",
                   "--macvtap", "fdmvt0=ve0")
    res = _results(run)
    assert set(res) == DEVICES and {r["action"] for r in res.values()} == {"created"}
    tap0, tap1, mvt = (res[n]["device"] for n in ("fdtap0", "fdtap1", "fdmvt0"))
    assert tap0["multi_queue"] is True and tap0["mtu"] == 1400 and tap0["bridge"] == "br0"
    assert tap1["multi_queue"] is False and tap1["owner"] == unpriv_user.uid
    assert tap0["mac"] not in GUEST_MACS and tap1["mac"] not in GUEST_MACS
    assert mvt["kind"] == "macvtap" and mvt["mac"] == "52:54:00:00:00:03"
    assert mvt["link"] == "ve0" and mvt["node"]
    # idempotent: the same request again changes nothing and says so
    again = _results(prep.run("from-domain", str(domain), "--user", unpriv_user.name,
                              "--bridge", "br0", "--macvtap", "fdmvt0=ve0"))
    assert {r["action"] for r in again.values()} == {"exists"}


def test_all_or_nothing_when_a_later_device_is_in_the_way(
    prep: Prep, netns: Netns, domain: Path, unpriv_user: User
) -> None:
    netns.ip("tuntap", "add", "mode", "tap", "name", "fdmvt0")  # someone else's device
    bad = prep.run("from-domain", str(domain), "--user", unpriv_user.name, "--bridge", "br0")
    assert (bad.code, bad.rc) == ("device-foreign", 4)
    assert not {"fdtap0", "fdtap1"} & link_names(netns)


def test_all_or_nothing_when_creation_fails_half_way(
    prep: Prep, netns: Netns, domain: Path, unpriv_user: User
) -> None:
    # fdmvt0 as a macvtap on a link that is not there: the taps made first are removed
    bad = prep.run("from-domain", str(domain), "--user", unpriv_user.name, "--bridge", "br0",
                   "--macvtap", "fdmvt0=nolink")
    assert bad.code == "source-dev-missing"
    assert not DEVICES & link_names(netns)
    assert any(e["event"] == "rolled-back" and e["name"] == "fdtap1" for e in prep.events())


def test_policy_is_checked_for_every_device_before_any_is_made(
    prep: Prep, netns: Netns, domain: Path, unpriv_user: User
) -> None:
    prep.write_policy(allow_user(
        unpriv_user, f'kinds = ["tap"]\nbridges = ["br0"]\nnetns = ["{netns.name}"]\n'
        "max_devices = 2\n"))
    bad = prep.run("from-domain", str(domain), "--user", unpriv_user.name, "--bridge", "br0",
                   requester=unpriv_user.name)
    assert (bad.code, bad.rc) == ("policy-quota", 3)  # three devices, quota two
    assert not DEVICES & link_names(netns)


def test_unreadable_file_for_the_requester(
    prep: Prep, domain: Path, unpriv_user: User, netns: Netns
) -> None:
    prep.write_policy(allow_user(unpriv_user, 'netns = ["*"]'))
    domain.chmod(0o600)  # root's file: a sudo user must not make prep read it for them
    bad = prep.run("from-domain", str(domain), "--user", unpriv_user.name,
                   requester=unpriv_user.name)
    assert bad.code == "file-unreadable"
    assert not DEVICES & link_names(netns)


@pytest.mark.parametrize(("kind", "code"), [
    ("fifo", "file-not-regular"), ("/dev/zero", "file-not-regular"),
    ("/dev/stdin", "file-not-regular"), ("huge", "file-too-large"),
])
def test_unsuitable_files_are_refused_at_once_and_without_the_lock(
    prep: Prep, netns: Netns, domain: Path, unpriv_user: User, scratch: Path, *,
    kind: str, code: str,
) -> None:
    import os
    import time

    from tapvirt.prep import lock

    prep.write_policy(allow_user(unpriv_user, 'netns = ["*"]'))
    path = kind
    if kind == "fifo":  # a FIFO nobody writes to would block the read forever
        path = str(scratch / "fifo")
        os.mkfifo(path)
        os.chown(path, unpriv_user.uid, unpriv_user.gid)
    elif kind == "huge":  # valid XML, but 2 MiB of it
        text = domain.read_text().replace("<devices>", "<devices>" + " " * (2 << 20))
        path = str(scratch / "huge.xml")
        Path(path).write_text(text)
        os.chmod(path, 0o644)
    held = lock.acquire()  # another run holds the global lock meanwhile
    assert held is not None
    try:
        start = time.monotonic()
        bad = prep.run("from-domain", path, "--user", unpriv_user.name,
                       requester=unpriv_user.name)
        assert time.monotonic() - start < 20
    finally:
        os.close(held)
    assert (bad.code, bad.rc) == (code, 1), bad.stdout
    assert not DEVICES & link_names(netns)
