"""Hotplug against a real QEMU (no guest OS, user-mode NICs: no root needed), through the
CLI as a user runs it: attach/detach live and in the definition, rollback when QEMU
refuses, a guest that never releases a device, concurrent hotplugs, and a hotplug
racing destroy or a QEMU crash. Tap and macvtap hotplug with a booted guest is in
tests/e2e/test_hotplug.py."""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tapvirt.qemu.qmp import QmpClient
from tests.support.reaper import (  # reap_module_orphans: an autouse fixture
    reap_module_orphans,  # noqa: F401
    reap_orphans,
)
from tests.unit.lifecycle.live_cli import runtime_dirs, tv, tvj

QEMU = shutil.which("qemu-system-x86_64")
pytestmark = pytest.mark.skipif(QEMU is None, reason="qemu-system-x86_64 is not installed")

XML = """<domain type='qemu'><name>{name}</name><memory unit='MiB'>32</memory>
<os><type arch='x86_64' machine='pc'>hvm</type></os>{features}<devices>
<interface type='user'><mac address='52:54:00:00:00:01'/><model type='virtio'/>
<boot order='1'/></interface>
</devices></domain>"""
ACPI = "<features><acpi/></features>"


def nic(mac: str, extra: str = "") -> str:
    return (f"<interface type='user'>\n  <mac address='{mac}'/>\n  <model type='e1000'/>"
            f"{extra}\n</interface>\n")


@pytest.fixture
def dirs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    return runtime_dirs(tmp_path, monkeypatch)


def write(dirs: Path, name: str, text: str) -> str:
    path = dirs / name
    path.write_text(text)
    return str(path)


@pytest.fixture
def guest(dirs: Path, capsys: pytest.CaptureFixture[str]) -> Iterator[str]:
    assert tv(capsys, "define", write(dirs, "d.xml", XML.format(name="hp1", features=ACPI)))[0] == 0
    assert tv(capsys, "start", "hp1")[0] == 0
    try:
        yield "hp1"
    finally:
        tv(capsys, "destroy", "hp1")


def qemu_view(dirs: Path, name: str) -> tuple[set[str], str]:
    """What QEMU itself has: the ids of its NICs (qom) and its netdevs (info network)."""
    with QmpClient.connect(str(dirs / "run" / "tapvirt" / name / "qmp.sock")) as qmp:
        peripherals = {p["name"] for p in qmp.execute("qom-list",
                                                      {"path": "/machine/peripheral"})
                       if p["type"].startswith("child<")}
        network = qmp.execute("human-monitor-command", {"command-line": "info network"})
    return peripherals, str(network)


def macs(capsys: pytest.CaptureFixture[str], name: str, *extra: str) -> list[tuple[str, str]]:
    rows = tvj(capsys, "domiflist", name, *extra)["interfaces"]
    return [(r["interface"], r["mac"]) for r in rows]


def test_attach_live_then_refused_duplicates(guest: str, dirs: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    f = write(dirs, "n2.xml", nic("52:54:00:00:00:02", "\n  <link state='down'/>"))
    rc, out, err = tv(capsys, "attach-device", guest, f)
    assert rc == 0 and out.strip() == "Device attached successfully", err
    assert macs(capsys, guest) == [("net0", "52:54:00:00:00:01"), ("net1", "52:54:00:00:00:02")]
    devices, network = qemu_view(dirs, guest)
    assert "net1" in devices and "hostnet1" in network
    assert "macaddr=52:54:00:00:00:02" in network
    live = tv(capsys, "dumpxml", guest)[1]
    assert "<mac address='52:54:00:00:00:02'/>" in live and "<alias name='net1'/>" in live
    assert tvj(capsys, "domif-getlink", guest, "net1")["state"] == "down"
    # --live only: the definition does not have it
    assert "52:54:00:00:00:02" not in (dirs / "cfg/tapvirt/domains/hp1.xml").read_text()
    err = tvj(capsys, "attach-device", guest, f)["error"]
    assert err["code"] == "device-duplicate" and "52:54:00:00:00:02" in err["cause"]
    assert qemu_view(dirs, guest) == (devices, network)  # nothing was sent to QEMU


def test_qemu_refusing_the_nic_leaves_nothing(guest: str, dirs: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    """The netdev is added, then QEMU refuses the device (boot index 1 is taken): the
    netdev is removed again and nothing is recorded."""
    before = qemu_view(dirs, guest)
    f = write(dirs, "n3.xml", nic("52:54:00:00:00:03", "\n  <boot order='1'/>"))
    err = tvj(capsys, "attach-device", guest, f, "--live")["error"]
    assert err["code"] == "hotplug-failed" and "boot" in err["cause"].lower(), err
    assert qemu_view(dirs, guest) == before
    assert macs(capsys, guest) == [("net0", "52:54:00:00:00:01")]
    assert "00:03" not in tv(capsys, "dumpxml", guest)[1]


def test_detach_that_the_guest_never_answers(guest: str, dirs: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    """No guest OS runs the ACPI eject: the wait for DEVICE_DELETED times out with
    hotplug-refused, and the NIC stays recorded because QEMU still has it."""
    assert tv(capsys, "attach-interface", guest, "user", "--mac", "52:54:00:00:00:04")[0] == 0
    t0 = time.monotonic()
    err = tvj(capsys, "detach-interface", guest, "user", "--mac", "52:54:00:00:00:04",
              "--timeout", "1")["error"]
    assert err["code"] == "hotplug-refused" and "within 1 s" in err["cause"]
    assert time.monotonic() - t0 < 8
    assert ("net1", "52:54:00:00:00:04") in macs(capsys, guest)
    assert "net1" in qemu_view(dirs, guest)[0]
    # which one to detach must be said when several match
    assert tvj(capsys, "detach-interface", guest, "user")["error"]["code"] == \
        "device-ambiguous"
    assert tvj(capsys, "detach-interface", guest, "user", "--mac",
               "52:54:00:00:00:99")["error"]["code"] == "device-not-found"


def test_config_and_persistent(dirs: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert tv(capsys, "define", write(dirs, "d.xml", XML.format(name="hp2", features=ACPI)))[0] == 0
    f = write(dirs, "n5.xml", nic("52:54:00:00:00:05"))
    assert tvj(capsys, "attach-device", "hp2", f, "--live")["error"]["code"] == \
        "domain-not-running"
    # not running: --current (the default) is the definition
    assert tv(capsys, "attach-device", "hp2", f)[0] == 0
    assert ("net1", "52:54:00:00:00:05") in macs(capsys, "hp2")
    assert tv(capsys, "start", "hp2")[0] == 0
    try:
        assert ("net1", "52:54:00:00:00:05") in macs(capsys, "hp2")  # started with it
        f6 = write(dirs, "n6.xml", nic("52:54:00:00:00:06"))
        assert tv(capsys, "attach-device", "hp2", f6, "--persistent")[0] == 0
        assert ("net2", "52:54:00:00:00:06") in macs(capsys, "hp2")
        f7 = write(dirs, "n7.xml", nic("52:54:00:00:00:07"))
        assert tv(capsys, "attach-device", "hp2", f7, "--live")[0] == 0
        stored = (dirs / "cfg/tapvirt/domains/hp2.xml").read_text()
        assert "00:00:06" in stored and "00:00:07" not in stored
        # --config detach of a running guest's NIC leaves the live one
        assert tv(capsys, "detach-device", "hp2", f6, "--config")[0] == 0
        assert "00:00:06" not in (dirs / "cfg/tapvirt/domains/hp2.xml").read_text()
        assert ("net2", "52:54:00:00:00:06") in macs(capsys, "hp2")
    finally:
        tv(capsys, "destroy", "hp2")
    # after the restart: what the definition has, nothing of the live-only plug
    assert tv(capsys, "start", "hp2")[0] == 0
    try:
        assert macs(capsys, "hp2") == [("net0", "52:54:00:00:00:01"),
                                       ("net1", "52:54:00:00:00:05")]
    finally:
        tv(capsys, "destroy", "hp2")


def test_no_acpi_no_pci_hotplug(dirs: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert tv(capsys, "define", write(dirs, "d.xml", XML.format(name="hp3", features="")))[0] == 0
    assert tv(capsys, "start", "hp3")[0] == 0
    try:
        before = qemu_view(dirs, "hp3")
        err = tvj(capsys, "attach-device", "hp3",
                  write(dirs, "n.xml", nic("52:54:00:00:00:08")))["error"]
        assert err["code"] == "no-pci-slot" and "<acpi/>" in err["fix"]
        assert qemu_view(dirs, "hp3") == before  # the netdev was removed again
    finally:
        tv(capsys, "destroy", "hp3")


def test_bad_device_files(guest: str, dirs: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cases = {
        "<controller type='usb'/>": "device-file-invalid",
        "<interface type='user'><mac address='zz'/></interface>": "invalid-mac",
        "<interface type='user'": "xml-malformed",
        "<interface type='ethernet'><target dev='nosuch0' managed='no'/></interface>":
            "device-missing",
    }
    for text, code in cases.items():
        err = tvj(capsys, "attach-device", guest, write(dirs, "bad.xml", text))["error"]
        assert err["code"] == code, (text, err)
    assert macs(capsys, guest) == [("net0", "52:54:00:00:00:01")]
    rc, _, err_text = tv(capsys, "attach-device", guest, str(dirs / "missing.xml"))
    assert rc == 1 and "error[file-unreadable]" in err_text and "Traceback" not in err_text


def _cli(dirs: Path, *argv: str) -> subprocess.Popen[str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(sys.path)
    return subprocess.Popen([sys.executable, "-m", "tapvirt.cli.main", *argv, "--json"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


def test_concurrent_hotplugs_serialize(guest: str, dirs: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    procs = [_cli(dirs, "attach-interface", guest, "user", "--mac", f"52:54:00:00:01:0{i}")
             for i in range(3)]
    results = [json.loads(p.communicate(timeout=120)[0]) for p in procs]
    assert all(r["ok"] for r in results), results
    rows = macs(capsys, guest)
    assert sorted(a for a, _ in rows) == ["net0", "net1", "net2", "net3"]
    devices, _ = qemu_view(dirs, guest)
    assert {"net1", "net2", "net3"} <= devices


def _wait_until_ops_lock_held(path: Path, proc: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()
        if path.exists():
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                fcntl.flock(fd, fcntl.LOCK_UN)
            except BlockingIOError:
                return
            finally:
                os.close(fd)
        time.sleep(0.02)
    raise AssertionError("the detach never took the domain's ops lock")


@pytest.mark.parametrize("how", ["destroy", "sigkill-qemu"])
def test_hotplug_racing_destroy_or_crash(how: str, guest: str, dirs: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    """A detach waits for the guest (which never answers); meanwhile the guest is
    destroyed or QEMU is killed: the detach fails with a code, the guest ends shut off,
    nothing is left running or listening."""
    assert tv(capsys, "attach-interface", guest, "user", "--mac", "52:54:00:00:02:01")[0] == 0
    info = tvj(capsys, "dominfo", guest)
    detach = _cli(dirs, "detach-interface", guest, "user", "--mac", "52:54:00:00:02:01",
                  "--timeout", "20")
    # the detach holds the domain's ops lock from before its request until the supervisor
    # answers: once it is held, the request is on its way (a loaded machine may take
    # seconds just to start the detach's interpreter)
    _wait_until_ops_lock_held(dirs / "run" / "tapvirt" / guest / "ops.lock", detach)
    time.sleep(1.0)  # the supervisor is waiting for DEVICE_DELETED now
    if how == "destroy":
        assert tv(capsys, "destroy", guest)[0] == 0
    else:
        os.kill(info["qemu_pid"], signal.SIGKILL)
    out, _ = detach.communicate(timeout=60)
    err = json.loads(out)["error"]
    assert err["code"] in ("qmp-unavailable", "control-failed", "domain-not-running"), err
    deadline = time.monotonic() + 10
    while tvj(capsys, "domstate", guest)["state"] != "shut off" and time.monotonic() < deadline:
        time.sleep(0.05)
    st = tvj(capsys, "domstate", guest)
    assert st["state"] == "shut off"
    assert st["reason"] == ("destroyed" if how == "destroy" else "crashed")
    rundir = dirs / "run" / "tapvirt" / guest
    assert not (rundir / "control.sock").exists() and not (rundir / "qmp.sock").exists()
    for pid in (info["qemu_pid"], info["supervisor_pid"]):
        deadline = time.monotonic() + 5
        while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
            reap_orphans()
            time.sleep(0.05)
        assert not Path(f"/proc/{pid}").exists()
    # the next start is clean: only the defined NIC
    assert tv(capsys, "start", guest)[0] == 0
    assert macs(capsys, guest) == [("net0", "52:54:00:00:00:01")]


def test_live_xml_keeps_alias_gaps(tmp_path: Path) -> None:
    """After net1 is unplugged the live XML has net0 and net2: it must parse as live XML
    (dominfo, the next hotplug), while a definition still accepts only ua- aliases."""
    from tapvirt.conf.parse import parse_domain_file
    from tapvirt.errors import TapvirtError

    path = tmp_path / "live.xml"
    path.write_text(XML.format(name="gap", features="").replace(
        "<boot order='1'/></interface>",
        "<boot order='1'/><alias name='net0'/></interface>\n<interface type='user'><mac "
        "address='52:54:00:00:00:02'/><alias name='net2'/></interface>"))
    dom = parse_domain_file(path, live=True)
    assert [i.alias for i in dom.devices.interfaces] == ["net0", "net2"]
    with pytest.raises(TapvirtError) as exc:
        parse_domain_file(path)
    assert exc.value.code.code == "invalid-alias"


def test_disks_list_attach_stats_info_and_cdrom_media(dirs: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    for img, size in (("a.img", 8 << 20), ("c1.iso", 1 << 20), ("c2.iso", 2 << 20)):
        with open(dirs / img, "wb") as f:
            f.truncate(size)
    # vdb is qcow2: its guest-visible capacity (4 MiB) is not its file size, so domblkinfo
    # of the running guest must read QEMU's format node, not fall back to the file.
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(dirs / "b.img"), "4M"],
                   check=True)
    disks = (f"<disk type='file' device='disk'><source file='{dirs}/a.img'/>"
             "<target dev='vda' bus='virtio'/></disk>"
             f"<disk type='file' device='cdrom'><source file='{dirs}/c1.iso'/>"
             "<target dev='sda' bus='sata'/></disk>")
    xml = XML.format(name="hp4", features=ACPI).replace("<devices>", "<devices>" + disks)
    assert tv(capsys, "define", write(dirs, "d.xml", xml))[0] == 0
    assert tv(capsys, "start", "hp4")[0] == 0
    try:
        _, out, _ = tv(capsys, "domblklist", "hp4", "--details")
        assert out.splitlines()[2].split() == ["file", "disk", "vda", f"{dirs}/a.img"]
        vdb = write(dirs, "b.xml", f"<disk type='file' device='disk'><driver name='qemu' "
                    f"type='qcow2'/><source file='{dirs}/b.img'/><target dev='vdb' "
                    "bus='virtio'/></disk>")
        assert tv(capsys, "attach-device", "hp4", vdb)[0] == 0
        assert [r["target"] for r in tvj(capsys, "domblklist", "hp4")["disks"]] == [
            "vda", "sda", "vdb"]
        assert tvj(capsys, "attach-device", "hp4", vdb)["error"]["code"] == "device-duplicate"
        sata = write(dirs, "s.xml", f"<disk type='file' device='disk'><source "
                     f"file='{dirs}/b.img'/><target dev='sdb' bus='sata'/></disk>")
        assert tvj(capsys, "attach-device", "hp4", sata)["error"]["code"] == \
            "hotplug-unsupported"
        missing = write(dirs, "m.xml", f"<disk type='file' device='disk'><source "
                        f"file='{dirs}/nope.img'/><target dev='vdc' bus='virtio'/></disk>")
        err = tvj(capsys, "attach-device", "hp4", missing)["error"]
        assert err["code"] == "hotplug-failed" and "nope.img" in err["cause"]
        stats = tvj(capsys, "domblkstat", "hp4", "vda")["stats"]
        assert list(stats) == ["rd_req", "rd_bytes", "wr_req", "wr_bytes", "flush_operations",
                               "rd_total_times", "wr_total_times", "flush_total_times"]
        assert all(isinstance(v, int) and v >= 0 for v in stats.values())
        info = tvj(capsys, "domblkinfo", "hp4", "vdb")
        assert info["capacity"] == 4 << 20
        assert info["physical"] == os.path.getsize(dirs / "b.img") < 4 << 20
        cd = write(dirs, "c.xml", f"<disk type='file' device='cdrom'><source "
                   f"file='{dirs}/c2.iso'/><target dev='sda' bus='sata'/></disk>")
        assert tv(capsys, "update-device", "hp4", cd)[1].strip() == "Device updated successfully"
        with QmpClient.connect(str(dirs / "run" / "tapvirt" / "hp4" / "qmp.sock")) as qmp:
            files = {b["qdev"]: b.get("inserted", {}).get("file")
                     for b in qmp.execute("query-block")}
        assert files["sata0-0-0"] == f"{dirs}/c2.iso"
        assert f"{dirs}/c2.iso" in tv(capsys, "dumpxml", "hp4")[1]
        err = tvj(capsys, "update-device", "hp4", vdb.replace("b.xml", "b.xml"))["error"]
        assert err["code"] == "hotplug-unsupported"  # a disk is not a cdrom: no media change
    finally:
        tv(capsys, "destroy", "hp4")
    assert tvj(capsys, "domblkinfo", "hp4", "vda")["capacity"] == 8 << 20  # from the file


def test_update_device_link_state_only(guest: str, dirs: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    base = ("<interface type='user'><mac address='52:54:00:00:00:01'/>"
            "<model type='virtio'/><boot order='1'/>{}</interface>")
    down = write(dirs, "u.xml", base.format("<link state='down'/>"))
    rc, out, _ = tv(capsys, "update-device", guest, down)
    assert rc == 0 and out.strip() == "Device updated successfully"
    assert tvj(capsys, "domif-getlink", guest, "net0")["state"] == "down"
    assert tvj(capsys, "domif-getlink", guest, "net0", "--config")["state"] == "up"
    other = write(dirs, "u2.xml", base.format("").replace("virtio", "e1000"))
    err = tvj(capsys, "update-device", guest, other)["error"]
    assert err["code"] == "hotplug-unsupported" and "model" in err["cause"]
    nomac = write(dirs, "u3.xml", "<interface type='user'><link state='up'/></interface>")
    assert tvj(capsys, "update-device", guest, nomac)["error"]["code"] == "device-file-invalid"
    assert tv(capsys, "update-device", guest, write(dirs, "u4.xml", base.format("")),
              "--persistent")[0] == 0
    assert tvj(capsys, "domif-getlink", guest, "net0")["state"] == "up"


def _wait_held(lock: Path, timeout: float) -> bool:
    """Until another process holds the flock on `lock`."""
    import fcntl

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if lock.exists():
            fd = os.open(lock, os.O_RDWR)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                fcntl.flock(fd, fcntl.LOCK_UN)
            except BlockingIOError:
                return True
            finally:
                os.close(fd)
        time.sleep(0.02)
    return False


def test_shutdown_waits_for_a_hotplug_in_progress(guest: str, dirs: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    """shutdown goes through the supervisor too: while a detach waits for the guest, the
    power-down queues behind it instead of fighting for the monitor; then (no guest OS
    answers the button) the guest is destroyed after the timeout. Consistent end."""
    assert tv(capsys, "attach-interface", guest, "user", "--mac", "52:54:00:00:06:01")[0] == 0
    detach = _cli(dirs, "detach-interface", guest, "user", "--mac", "52:54:00:00:06:01",
                  "--timeout", "3")
    assert _wait_held(dirs / "run" / "tapvirt" / guest / "ops.lock", 30)  # detach is on
    time.sleep(0.5)
    out = tvj(capsys, "shutdown", guest, "--timeout", "1")
    assert out["state"] == "shut off" and "destroyed" in out["reason"]
    res = json.loads(detach.communicate(timeout=60)[0])
    assert res["error"]["code"] == "hotplug-refused"  # it finished before the power-down
    rundir = dirs / "run" / "tapvirt" / guest
    assert not (rundir / "control.sock").exists()


def test_user_aliases_are_kept_and_unique(guest: str, dirs: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    ua = "\n  <alias name='ua-extra'/>"
    assert tv(capsys, "attach-device", guest, write(dirs, "a1.xml",
                                                    nic("52:54:00:00:07:01", ua)))[0] == 0
    assert ("ua-extra", "52:54:00:00:07:01") in macs(capsys, guest)
    assert "ua-extra" in qemu_view(dirs, guest)[0]  # QEMU's device id is the alias
    err = tvj(capsys, "attach-device", guest, write(dirs, "a2.xml",
                                                    nic("52:54:00:00:07:02", ua)))["error"]
    assert err["code"] == "device-duplicate" and "ua-extra" in err["cause"]
    # the next automatic alias skips nothing and reuses nothing
    assert tv(capsys, "attach-interface", guest, "user", "--mac", "52:54:00:00:07:03")[0] == 0
    assert ("net1", "52:54:00:00:07:03") in macs(capsys, guest)
