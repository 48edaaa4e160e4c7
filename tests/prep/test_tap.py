"""`tapvirt-prep tap` on real devices in a test namespace, and the unprivileged side
attaching to what it made."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tests.prep.attach import tap_attach
from tests.prep.conftest import Prep, link_names
from tests.support.sandbox import AsUser, Netns, User, make_group, run


def _info(netns: Netns, dev: str) -> dict[str, Any]:
    data = netns.link_json(dev)
    assert data is not None, f"{dev} missing"
    return data


def _rx_packets(netns: Netns, dev: str) -> int:
    out = netns.ip("-s", "-j", "link", "show", "dev", dev).stdout
    return int(json.loads(out)[0]["stats64"]["rx"]["packets"])


def test_tap_is_created_owned_up_enslaved_with_bridge_mtu(
    prep: Prep, netns: Netns, unpriv_user: User
) -> None:
    netns.ip("link", "add", "br0", "type", "bridge")
    netns.ip("link", "set", "br0", "mtu", "1400", "up")
    res = prep.ok("tap", "mytap0", "--user", unpriv_user.name, "--bridge", "br0")
    assert res["action"] == "created" and res["rule"] == "root"
    info = _info(netns, "mytap0")
    data = info["linkinfo"]["info_data"]
    assert data["type"] == "tap" and data["pi"] is False and data["vnet_hdr"] is True
    assert data["persist"] is True and data["multi_queue"] is False
    assert data["user"] == unpriv_user.name and "group" not in data
    assert info["master"] == "br0" and info["mtu"] == 1400 and "UP" in info["flags"]
    mac = info["address"]
    assert mac.startswith("fe:") and res["device"]["mac"] == mac
    assert info["ifalias"] == f"tapvirt-prep:v1 user={unpriv_user.uid}"


def test_unprivileged_user_attaches_and_frames_flow(
    prep: Prep, netns: Netns, as_user: AsUser, tun_node: Path
) -> None:
    netns.ip("link", "add", "br0", "type", "bridge")
    netns.ip("link", "set", "br0", "up")
    prep.ok("tap", "vm0", "--user", as_user.user.name, "--bridge", "br0")
    before = _rx_packets(netns, "vm0")
    out = as_user.python(tap_attach("vm0", str(tun_node)), check=True).stdout.split()
    assert out == ["vm0", "0x1802", "1", "sent"]  # attached, and the device is UP (no EIO)
    assert _rx_packets(netns, "vm0") == before + 1


def test_multiqueue_tap_takes_one_fd_per_queue(
    prep: Prep, netns: Netns, as_user: AsUser, tun_node: Path
) -> None:
    res = prep.ok("tap", "mq0", "--user", as_user.user.name, "--queues", "4")
    assert res["device"]["multi_queue"] is True
    assert _info(netns, "mq0")["linkinfo"]["info_data"]["multi_queue"] is True
    out = as_user.python(tap_attach("mq0", str(tun_node), queues=4), check=True).stdout
    assert out.split()[:3] == ["mq0", "0x1902", "4"]
    # a single-queue attach to it is what the kernel refuses: multi_queue is as asked
    assert as_user.python(tap_attach("mq0", str(tun_node)), check=True).stdout.split() == [
        "ERR", "22"]


def test_group_owned_tap_lets_group_members_attach(
    prep: Prep, netns: Netns, as_user: AsUser, tun_node: Path
) -> None:
    gname, gid = make_group()
    as_user.user.extra_groups.append(gname)
    res = prep.ok("tap", "gtap0", "--group", gname)
    assert res["device"]["group"] == gid and res["device"]["owner"] is None
    assert as_user.python(tap_attach("gtap0", str(tun_node)), check=True).stdout.split() == [
        "ERR", "1"]  # not in the group yet
    as_user.groups = [gid]
    out = as_user.python(tap_attach("gtap0", str(tun_node)), check=True).stdout.split()
    assert out[:2] == ["gtap0", "0x1802"]


def test_other_users_cannot_attach(
    prep: Prep, netns: Netns, as_user: AsUser, tun_node: Path
) -> None:
    prep.ok("tap", "roots0", "--user", "0")
    out = as_user.python(tap_attach("roots0", str(tun_node)), check=True).stdout.split()
    assert out == ["ERR", "1"]  # EPERM: the owner is what prep set


def test_rerun_is_idempotent_and_mismatch_is_reported_field_by_field(
    prep: Prep, netns: Netns, unpriv_user: User
) -> None:
    netns.ip("link", "add", "br0", "type", "bridge")
    args = ("tap", "idem0", "--user", unpriv_user.name, "--bridge", "br0", "--queues", "2",
            "--mac", "fe:00:00:00:00:01", "--mtu", "1450")
    first = prep.ok(*args)
    again = prep.ok(*args)
    assert (first["action"], again["action"]) == ("created", "exists")
    assert again["device"] == first["device"]
    bad = prep.fails("device-mismatch", "tap", "idem0", "--user", "0", "--queues", "1",
                     "--mac", "fe:00:00:00:00:02", "--mtu", "1450", rc=4)
    fields = bad.out["error"]["details"]["fields"]
    assert set(fields) == {"user", "owner", "multi_queue", "bridge", "mac"}
    assert fields["mac"] == {"want": "fe:00:00:00:00:02", "have": "fe:00:00:00:00:01"}
    assert fields["owner"] == {"want": 0, "have": unpriv_user.uid}
    # nothing was "fixed"
    info = _info(netns, "idem0")
    assert info["address"] == "fe:00:00:00:00:01" and info["master"] == "br0"


def test_owner_changing_the_mac_is_a_mismatch_not_silently_accepted(
    prep: Prep, netns: Netns, unpriv_user: User
) -> None:
    prep.ok("tap", "g0", "--user", unpriv_user.name, "--guest-mac", "52:54:00:aa:bb:cc")
    netns.ip("link", "set", "g0", "address", "52:54:00:aa:bb:cc")  # what an owner could do
    bad = prep.fails("device-mismatch", "tap", "g0", "--user", unpriv_user.name,
                     "--guest-mac", "52:54:00:aa:bb:cc")
    assert set(bad.out["error"]["details"]["fields"]) == {"mac"}


def test_mac_equal_to_guest_mac_is_refused(prep: Prep, netns: Netns) -> None:
    prep.fails("mac-conflict", "tap", "t0", "--user", "0", "--mac", "52:54:00:01:02:03",
               "--guest-mac", "52:54:00:01:02:03", rc=1)
    assert "t0" not in link_names(netns)


def test_foreign_tap_is_never_touched(prep: Prep, netns: Netns, unpriv_user: User) -> None:
    netns.ip("tuntap", "add", "mode", "tap", "user", unpriv_user.name, "name", "admin0")
    before = _info(netns, "admin0")
    prep.fails("device-foreign", "tap", "admin0", "--user", "0", rc=4)
    prep.fails("device-foreign", "delete", "admin0", rc=4)
    after = _info(netns, "admin0")
    assert after["linkinfo"] == before["linkinfo"] and after["address"] == before["address"]
    assert "admin0" not in [d["name"] for d in prep.run("list").out["devices"]]


def test_failure_half_way_leaves_no_device(prep: Prep, netns: Netns) -> None:
    netns.ip("link", "add", "ve0", "type", "veth", "peer", "name", "ve1")
    # explicit MTU skips the bridge lookup: enslaving to a veth fails inside the kernel
    bad = prep.run("tap", "half0", "--user", "0", "--bridge", "ve0", "--mtu", "1500")
    assert bad.rc == 1 and bad.code == "host-error"
    assert "half0" not in link_names(netns)
    prep.fails("bridge-missing", "tap", "half1", "--user", "0", "--bridge", "ve0")
    prep.fails("bridge-missing", "tap", "half2", "--user", "0", "--bridge", "nobr")
    assert not {"half1", "half2"} & link_names(netns)


def test_bad_values_are_rejected_before_anything_happens(prep: Prep, netns: Netns) -> None:
    prep.fails("bad-request", "tap", "v0", "--user", "0", "--mtu", "65535")
    prep.fails("bad-request", "tap", "v0", "--user", "0", "--queues", "0")
    prep.fails("bad-request", "tap", "v0", "--user", "0", "--mac", "01:00:5e:00:00:01")
    prep.fails("unknown-user", "tap", "v0", "--user", "no-such-user-tv")
    assert "v0" not in link_names(netns)


def test_delete_and_list(prep: Prep, netns: Netns, unpriv_user: User) -> None:
    prep.ok("tap", "d0", "--user", unpriv_user.name)
    prep.ok("tap", "d1", "--user", unpriv_user.name, "--queues", "2")
    listed = {d["name"]: d for d in prep.run("list").out["devices"]}
    assert set(listed) == {"d0", "d1"}
    assert listed["d1"]["multi_queue"] is True and listed["d0"]["user"] == unpriv_user.uid
    assert prep.ok("delete", "d0")["action"] == "deleted"
    assert "d0" not in link_names(netns)
    prep.fails("not-prepared", "delete", "d0", rc=1)
    assert [d["name"] for d in prep.run("list").out["devices"]] == ["d1"]


def test_plain_output_and_exit_codes(prep: Prep, netns: Netns) -> None:
    run_ = prep.run("tap", "p0", "--user", "0", json_out=False)
    assert run_.rc == 0 and run_.stdout.startswith("created tap p0 ")
    run_ = prep.run("tap", "p0", "--user", "0", json_out=False)
    assert run_.rc == 0 and run_.stdout.startswith("already exists and matches: tap p0")
    bad = prep.run("tap", "x y", "--user", "0", json_out=False)
    assert bad.rc == 1 and bad.stderr.startswith("error[invalid-name]")
    assert "fix:" in bad.stderr and "Traceback" not in bad.stderr
    usage = prep.run("tap", json_out=False)
    assert usage.rc == 2


def test_missing_namespace_is_an_error_and_not_created(prep: Prep) -> None:
    run_ = prep.run("tap", "n0", "--user", "0", "--netns", "tv-nonexistent-ns", netns=False)
    assert run_.code == "netns-missing"
    assert not Path("/run/netns/tv-nonexistent-ns").exists()
    assert run(["ip", "link", "show", "n0"], check=False).returncode != 0


def test_delete_refuses_an_attached_tap_unless_forced(
    prep: Prep, netns: Netns, as_user: AsUser, tun_node: Path
) -> None:
    import subprocess

    prep.ok("tap", "busy0", "--user", as_user.user.name)
    holder = subprocess.Popen(as_user.argv([
        "python3", "-c",
        "import fcntl, os, struct, sys, time\n"
        f"fd = os.open({str(tun_node)!r}, os.O_RDWR)\n"
        "fcntl.ioctl(fd, 0x400454CA, struct.pack('16sH22x', b'busy0', 0x1002))\n"
        "print('held', flush=True); sys.stdin.read()"]),
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        bad = prep.fails("device-in-use", "delete", "busy0", rc=4)
        assert "--force" in bad.out["error"]["fix"]
        assert "busy0" in link_names(netns)
        assert prep.ok("delete", "busy0", "--force")["action"] == "deleted"
        assert "busy0" not in link_names(netns)
    finally:
        holder.kill()
        holder.wait()
