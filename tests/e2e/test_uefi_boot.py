"""End to end (issue 10, tests 2 and 7): UEFI disk boot as the unprivileged user on a
precreated tap. `<os firmware='efi'>` (secure boot off, so OVMF_CODE_4M.fd with its UEFI
shell is chosen from the firmware descriptors) boots an EFI system partition holding the
test guest (tests/support/disk.py: systemd-boot starts the kernel's EFI stub); the guest
pings the bridge and the host pings it. The NVRAM is created at the first start in the
user's data directory (0600), is the same file after a restart, a second domain gets its
own, `undefine` is refused while it exists and `undefine --nvram` removes it. A missing
firmware is a named error with nothing left running."""

from __future__ import annotations

import shutil
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.lab import BRIDGE_IP, Lab, module_lab
from tests.support import disk

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(shutil.which("qemu-system-x86_64") is None,
                       reason="qemu-system-x86_64 is not installed"),
    pytest.mark.skipif(shutil.which("mcopy") is None or shutil.which("mkfs.vfat") is None,
                       reason="mtools and dosfstools are not installed (scripts/install-deps)"),
    pytest.mark.skipif(not disk.SDBOOT.exists(),
                       reason="Debian's systemd-boot-efi is not installed (scripts/install-deps)"),
    pytest.mark.skipif(not Path("/usr/share/qemu/firmware/60-edk2-x86_64.json").exists(),
                       reason="Debian's ovmf is not installed (scripts/install-deps)"),
]

BOOT_TIMEOUT = 400  # OVMF under TCG on a loaded host: firmware, shell countdown, kernel


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    yield from module_lab()


def _xml(name: str, path: str, *, tap: str, mac: str, os_extra: str = "") -> str:
    return f"""<domain type='qemu'>
  <name>{name}</name>
  <memory unit='MiB'>256</memory>
  <vcpu>1</vcpu>
  <os firmware='efi'>
    <type arch='x86_64' machine='q35'>hvm</type>
    <firmware>
      <feature enabled='no' name='secure-boot'/>
    </firmware>{os_extra}
  </os>
  <features><acpi/></features>
  <devices>
    <disk type='file' device='disk'>
      <driver name='qemu' type='raw'/>
      <source file='{path}'/>
      <target dev='vda' bus='virtio'/>
      <boot order='1'/>
    </disk>
    <interface type='ethernet'>
      <mac address='{mac}'/>
      <target dev='{tap}' managed='no'/>
      <model type='virtio'/>
    </interface>
  </devices>
</domain>
"""


def _nvram(lab: Lab, name: str) -> Path:
    return lab.user.home / ".local" / "share" / "tapvirt" / "nvram" / f"{name}_VARS.fd"


def test_uefi_disk_boot_and_nvram(lab: Lab) -> None:
    name, other = "tv-uefi", "tv-uefi2"
    ip = lab.next_ip()
    base = disk.uefi_disk(lab.image, lab.image.cmdline(ip=f"{ip}/24", peer=BRIDGE_IP))
    own = lab.user.home / f"{name}.raw"
    disk.raw_copy(base, own, lab.user.uid, lab.user.gid)
    lab.define(name, _xml(name, str(own), tap=lab.tap(), mac="52:54:00:e2:20:01"))
    nvram = _nvram(lab, name)
    assert not nvram.exists()
    lab.tv("start", name)
    try:
        m = lab.wait_console(name, r"TV-MARKER up=\S+ ip=(\S+)", timeout=BOOT_TIMEOUT)
        assert m.group(1) == f"{ip}/24"
        lab.wait_console(name, r"TV-PING-(OK|FAIL)", timeout=90)
        assert "TV-PING-OK" in lab.console(name), lab.console(name)[-1500:]
        assert lab.host_ping(ip), f"the host cannot ping {ip}"
        live = lab.tv("dumpxml", name).stdout
        assert "/usr/share/OVMF/OVMF_CODE_4M.fd</loader>" in live, live
        assert f"<nvram template='/usr/share/OVMF/OVMF_VARS_4M.fd'>{nvram}</nvram>" in live
        assert "<kernel>" not in live
        st = nvram.stat()
        assert stat.S_IMODE(st.st_mode) == 0o600
        assert (st.st_uid, st.st_gid) == (lab.user.uid, lab.user.gid)
    finally:
        lab.tv("destroy", name, check=False)
    inode = nvram.stat().st_ino
    # a restart keeps the same file (the guest's variables survive)
    lab.tv("start", name)
    try:
        lab.wait_console(name, r"TV-MARKER up=", timeout=BOOT_TIMEOUT)
        assert nvram.stat().st_ino == inode
    finally:
        lab.tv("destroy", name, check=False)
    # a second domain gets its own file
    own2 = lab.user.home / f"{other}.raw"
    disk.raw_copy(base, own2, lab.user.uid, lab.user.gid)
    lab.define(other, _xml(other, str(own2), tap=lab.tap(), mac="52:54:00:e2:20:02"))
    lab.tv("start", other, "--paused")
    try:
        assert _nvram(lab, other).is_file()
        assert _nvram(lab, other).stat().st_ino != inode
    finally:
        lab.tv("destroy", other, check=False)
    # undefine: refused while the NVRAM exists, --nvram removes it
    proc = lab.tv("undefine", name, check=False)
    assert proc.returncode == 1 and "error[nvram-exists]" in proc.stderr, proc
    assert "--nvram" in proc.stderr and nvram.exists()
    lab.tv("undefine", name, "--nvram")
    assert not nvram.exists()
    lab.tv("undefine", other, "--keep-nvram")
    assert _nvram(lab, other).exists()


def test_missing_firmware_is_named(lab: Lab) -> None:
    """No descriptor matches (secure boot on a pc machine: Debian's secure builds are
    q35-only), and a loader file that is not there: named errors, nothing running."""
    name = "tv-uefi-nofw"
    base = disk.uefi_disk(lab.image, lab.image.cmdline())
    img = lab.user.home / f"{name}.raw"
    disk.raw_copy(base, img, lab.user.uid, lab.user.gid)
    xml = _xml(name, str(img), tap=lab.tap(), mac="52:54:00:e2:20:7f").replace(
        "machine='q35'", "machine='pc'").replace("enabled='no'", "enabled='yes'")
    lab.define(name, xml)
    proc = lab.tv("start", name, check=False)
    assert proc.returncode == 1, proc
    assert "error[firmware-not-found]" in proc.stderr and "apt-get install ovmf" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert lab.tv("domstate", name).stdout.strip() == "shut off"
    assert not (lab.rundir(name) / "qmp.sock").exists()
    assert not _nvram(lab, name).exists()
    xml = f"""<domain type='qemu'><name>{name}</name><memory unit='MiB'>64</memory>
<os><type arch='x86_64' machine='q35'>hvm</type>
<loader readonly='yes' type='pflash'>/usr/share/OVMF/NOT_THERE.fd</loader>
<nvram template='/usr/share/OVMF/OVMF_VARS_4M.fd'/></os><devices/></domain>"""
    lab.define(name, xml)
    proc = lab.tv("start", name, check=False)
    assert proc.returncode == 1 and "error[firmware-not-found]" in proc.stderr, proc
    assert "NOT_THERE.fd" in proc.stderr
    assert lab.tv("domstate", name).stdout.strip() == "shut off"
    assert not _nvram(lab, name).exists()
