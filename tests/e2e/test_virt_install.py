"""End to end (issue 10, test 5): a domain as `virt-install --print-xml` writes it for a
cloud image with `--cloud-init`, a tap given as `--network type=ethernet,target.dev=TAP`
plus `managed='no'`, `--graphics vnc`, the guest agent channel, `--rng /dev/urandom` and
`--tpm emulator`, started unchanged otherwise by the unprivileged user: it boots from
its qcow2 disk, reads the cloud-init NoCloud seed on its cdrom (hostname and ssh key
from the seed's user-data, really read by the guest), pings through the precreated tap,
its real guest agent answers, swtpm runs as the user and the display has a URI.

The XML below follows /var/cache/tapvirt-corpus/virt-install/cloud-debian11-cloudinit-
firstboot-unmanaged.xml (Debian 12's virt-install 4.1) element by element, with graphics,
video, tablet and TPM as virt-install adds them. One change: the seed cdrom sits on
virtio-scsi instead of SATA, because the test guest's Debian cloud kernel has no AHCI
driver (`--disk device=cdrom,bus=scsi` in virt-install terms); with a stock kernel the
SATA cdrom works the same (the disk is already read through SATA by SeaBIOS in
test_disk_boot.py)."""

from __future__ import annotations

import secrets
import shutil
from collections.abc import Iterator

import pytest

from tests.e2e.lab import BRIDGE_IP, Lab, module_lab, wait_until
from tests.support import disk

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(shutil.which("qemu-system-x86_64") is None,
                       reason="qemu-system-x86_64 is not installed"),
    pytest.mark.skipif(shutil.which("syslinux") is None or shutil.which("mcopy") is None,
                       reason="syslinux and mtools are not installed (scripts/install-deps)"),
    pytest.mark.skipif(shutil.which("xorrisofs") is None,
                       reason="xorriso is not installed: it makes the cloud-init seed ISO"),
    pytest.mark.skipif(shutil.which("swtpm") is None, reason="swtpm is not installed"),
]

NAME = "tv-vinst"
MAC = "52:54:00:88:1c:d0"
UUID = "fd03c481-a7dd-4879-b89d-a0aed4dbbeee"

XML = """<domain type="qemu">
  <name>{name}</name>
  <uuid>{uuid}</uuid>
  <metadata>
    <libosinfo:libosinfo xmlns:libosinfo="http://libosinfo.org/xmlns/libvirt/domain/1.0">
      <libosinfo:os id="http://debian.org/debian/11"/>
    </libosinfo:libosinfo>
  </metadata>
  <memory>1048576</memory>
  <currentMemory>1048576</currentMemory>
  <vcpu>2</vcpu>
  <sysinfo type="smbios">
    <system>
      <entry name="serial">ds=nocloud</entry>
    </system>
  </sysinfo>
  <os>
    <type arch="x86_64" machine="q35">hvm</type>
    <smbios mode="sysinfo"/>
  </os>
  <features>
    <acpi/>
    <apic/>
  </features>
  <clock offset="utc">
    <timer name="rtc" tickpolicy="catchup"/>
    <timer name="pit" tickpolicy="delay"/>
    <timer name="hpet" present="no"/>
  </clock>
  <on_reboot>destroy</on_reboot>
  <pm>
    <suspend-to-mem enabled="no"/>
    <suspend-to-disk enabled="no"/>
  </pm>
  <devices>
    <emulator>/usr/bin/qemu-system-x86_64</emulator>
    <disk type="file" device="disk">
      <driver name="qemu" type="qcow2"/>
      <source file="{disk}"/>
      <target dev="vda" bus="virtio"/>
    </disk>
    <controller type="usb" model="qemu-xhci" ports="15"/>
    <controller type="scsi" model="virtio-scsi"/>
{root_ports}
    <interface type="ethernet">
      <mac address="{mac}"/>
      <target dev="{tap}" managed="no"/>
      <model type="virtio"/>
    </interface>
    <console type="pty"/>
    <channel type="unix">
      <source mode="bind"/>
      <target type="virtio" name="org.qemu.guest_agent.0"/>
    </channel>
    <input type="tablet" bus="usb"/>
    <graphics type="vnc" port="-1"/>
    <video>
      <model type="virtio"/>
    </video>
    <tpm model="tpm-crb">
      <backend type="emulator"/>
    </tpm>
    <memballoon model="virtio"/>
    <rng model="virtio">
      <backend model="random">/dev/urandom</backend>
    </rng>
    <disk type="file" device="cdrom">
      <driver name="qemu" type="raw"/>
      <source file="{seed}"/>
      <target dev="sda" bus="scsi"/>
      <readonly/>
    </disk>
  </devices>
</domain>
"""


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    yield from module_lab()


def test_virt_install_cloud_init_domain_boots_reads_its_seed_and_pings(lab: Lab) -> None:
    ip = lab.next_ip()
    base = disk.bios_disk(lab.image, lab.image.cmdline(ip=f"{ip}/24", peer=BRIDGE_IP,
                                                       seed=True))
    own = disk.qcow2_overlay(base, lab.user.home / f"{NAME}-disk.qcow2",
                             lab.user.uid, lab.user.gid)
    hostname, key = f"tv-ci-{secrets.token_hex(3)}", f"tv-key-{secrets.token_hex(4)}"
    seed = disk.nocloud_seed(
        lab.user.home / f"{NAME}-cloudinit.iso",
        f"#cloud-config\nhostname: {hostname}\nssh_authorized_keys:\n"
        f"  - ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIE1tYXJrZXJtYXJrZXJtYXJrZXI {key}\n",
        f"instance-id: iid-{NAME}\nlocal-hostname: not-this-one\n",
        lab.user.uid, lab.user.gid)
    ports = "\n".join('    <controller type="pci" model="pcie-root-port"/>'
                      for _ in range(14))
    ports = '    <controller type="pci" model="pcie-root"/>\n' + ports
    lab.define(NAME, XML.format(name=NAME, uuid=UUID, disk=own, seed=seed, mac=MAC,
                                tap=lab.tap(), root_ports=ports))
    lab.tv("start", NAME)
    try:
        m = lab.wait_console(NAME, r"TV-SEED dev=(\S+) instance-id=(\S+) hostname=(\S+) "
                                   r"keys=(\d+) key=(\S+)", timeout=300)
        assert m.groups() == ("/dev/sr0", f"iid-{NAME}", hostname, "1", key), m.group(0)
        lab.wait_console(NAME, r"TV-MARKER up=\S+ ip=" + ip.replace(".", r"\.") + "/24")
        lab.wait_console(NAME, r"TV-PING-(OK|FAIL)", timeout=60)
        assert "TV-PING-OK" in lab.console(NAME), lab.console(NAME)[-1500:]
        assert lab.host_ping(ip), f"the host cannot ping {ip}"
        # the other virt-install devices work too, as the user
        assert "TV-AGENT /dev/vport" in lab.console(NAME)
        assert wait_until(lambda: lab.tv("domifaddr", NAME, "--source", "agent",
                                         check=False).returncode == 0, 60, 1.0)
        rows = lab.tv_json("domifaddr", NAME, "--source", "agent")["addresses"]
        assert {"name": "eth0", "mac": MAC, "protocol": "ipv4", "address": f"{ip}/24",
                "source": "agent"} in rows, rows
        helpers = lab.state(NAME).get("helpers") or []
        assert [h["name"] for h in helpers] == ["swtpm"], helpers
        uri = lab.tv("domdisplay", NAME).stdout.strip()
        assert uri.startswith(("vnc+unix:///", "vnc://127.0.0.1:")), uri
        live = lab.tv("dumpxml", NAME).stdout
        assert str(seed) in live and "<kernel>" not in live
    finally:
        lab.tv("destroy", NAME, check=False)
