"""End to end (issue 10, test 1): BIOS disk boot as the unprivileged user on a
precreated tap. SeaBIOS boots a syslinux FAT disk holding the test guest
(tests/support/disk.py, built locally and cached), on pc and q35, raw and qcow2 with a
backing file, `<boot dev='hd'/>` and `<boot order>`, on the virtio, sata and scsi buses;
each guest boots, pings the bridge, and the host pings it back."""

from __future__ import annotations

import shutil
from collections.abc import Iterator

import pytest

from tests.e2e.lab import BRIDGE_IP, Lab, module_lab
from tests.support import disk

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(shutil.which("qemu-system-x86_64") is None,
                       reason="qemu-system-x86_64 is not installed"),
    pytest.mark.skipif(shutil.which("syslinux") is None or shutil.which("mcopy") is None,
                       reason="syslinux and mtools are not installed (scripts/install-deps)"),
]

# (name, machine, format, bus, boot by order?)
CASES = [
    ("tv-dpc", "pc", "qcow2", "virtio", False),
    ("tv-dq35", "q35", "raw", "virtio", True),
    ("tv-dsata", "q35", "qcow2", "sata", False),
    ("tv-dscsi", "pc", "raw", "scsi", True),
]


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    yield from module_lab()


def _xml(name: str, machine: str, path: str, *, fmt: str, bus: str, by_order: bool,
         tap: str, mac: str) -> str:
    dev = "vda" if bus == "virtio" else "sda"
    boot_os = "" if by_order else "<boot dev='hd'/>"
    boot_dev = "<boot order='1'/>" if by_order else ""
    return f"""<domain type='qemu'>
  <name>{name}</name>
  <memory unit='MiB'>192</memory>
  <vcpu>1</vcpu>
  <os><type arch='x86_64' machine='{machine}'>hvm</type>{boot_os}</os>
  <features><acpi/></features>
  <devices>
    <disk type='file' device='disk'>
      <driver name='qemu' type='{fmt}'/>
      <source file='{path}'/>
      <target dev='{dev}' bus='{bus}'/>{boot_dev}
    </disk>
    <interface type='ethernet'>
      <mac address='{mac}'/>
      <target dev='{tap}' managed='no'/>
      <model type='virtio'/>
    </interface>
  </devices>
</domain>
"""


def test_bios_disk_boot(lab: Lab) -> None:
    started: list[tuple[str, str]] = []
    for n, (name, machine, fmt, bus, by_order) in enumerate(CASES):
        ip = lab.next_ip()
        base = disk.bios_disk(lab.image, lab.image.cmdline(ip=f"{ip}/24", peer=BRIDGE_IP))
        own = lab.user.home / f"{name}.{fmt}"
        if fmt == "qcow2":
            disk.qcow2_overlay(base, own, lab.user.uid, lab.user.gid)
        else:
            disk.raw_copy(base, own, lab.user.uid, lab.user.gid)
        lab.define(name, _xml(name, machine, str(own), fmt=fmt, bus=bus, by_order=by_order,
                              tap=lab.tap(), mac=f"52:54:00:e2:10:{n:02x}"))
        lab.tv("start", name)
        started.append((name, ip))
    try:
        for name, ip in started:
            m = lab.wait_console(name, r"TV-MARKER up=\S+ ip=(\S+)", timeout=300)
            assert m.group(1) == f"{ip}/24"
            lab.wait_console(name, r"TV-PING-(OK|FAIL)", timeout=60)
            assert "TV-PING-OK" in lab.console(name), lab.console(name)[-1500:]
            assert lab.host_ping(ip), f"{name}: the host cannot ping {ip}"
            # it booted from the disk: no -kernel on its command line
            assert "<kernel>" not in lab.tv("dumpxml", name).stdout
    finally:
        for name, _ in started:
            lab.tv("destroy", name, check=False)


def test_unreadable_disk_image_is_named(lab: Lab) -> None:
    name = "tv-dnoread"
    base = disk.bios_disk(lab.image, lab.image.cmdline())
    img = lab.user.home / f"{name}.raw"
    disk.raw_copy(base, img, 0, 0)  # root's, 0600: the user cannot open it
    lab.define(name, _xml(name, "pc", str(img), fmt="raw", bus="virtio", by_order=False,
                          tap=lab.tap(), mac="52:54:00:e2:10:7f"))
    proc = lab.tv("start", name, check=False)
    assert proc.returncode == 1, proc
    assert "error[disk-unreadable]" in proc.stderr and "vda" in proc.stderr
    assert "fix:" in proc.stderr and "Traceback" not in proc.stderr
    assert lab.tv("domstate", name).stdout.strip() == "shut off"
    assert not (lab.rundir(name) / "qmp.sock").exists()
