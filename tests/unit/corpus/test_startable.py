"""make_startable changes only what the test host lacks, and keeps accepted documents
accepted (the start test would otherwise judge the rewrite, not the document)."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from lxml import etree

from tapvirt.conf.parse import parse_domain
from tests.corpus.startable import Image, Tap, make_startable

GOLDEN = Path(__file__).resolve().parents[2] / "data" / "xml2argv"

DOC = """<domain type='kvm'>
  <name>orig</name><uuid>c7a5fdbd-edaf-9455-926a-d65c16db1809</uuid>
  <memory unit='GiB'>4</memory><currentMemory unit='GiB'>2</currentMemory>
  <os><type arch='x86_64' machine='pc'>hvm</type><kernel>/nonexistent/vmlinuz</kernel></os>
  <cpu mode='host-passthrough' migratable='on'/>
  <devices>
    <emulator>/usr/libexec/nonexistent-qemu</emulator>
    <disk type='block' device='disk'><driver name='qemu' type='raw'/>
      <source dev='/dev/HostVG/QEMUGuest1'/><target dev='vda' bus='virtio'/></disk>
    <disk type='file' device='cdrom'><source file='/srv/install.iso'/>
      <target dev='sda' bus='sata'/><readonly/></disk>
    <interface type='bridge'><mac address='52:54:00:00:00:01'/><source bridge='br0'/>
      <model type='virtio'/><driver queues='4'/><mtu size='9000'/></interface>
    <interface type='user'><mac address='52:54:00:00:00:02'/></interface>
    <serial type='file'><source path='/var/log/guest.log'/><target port='0'/></serial>
    <console type='file'><source path='/var/log/guest.log'/><target type='serial'/></console>
    <channel type='unix'><source mode='connect' path='/run/agent.sock'/>
      <target type='virtio' name='org.qemu.guest_agent.0'/></channel>
  </devices>
</domain>"""


def _plan(text: str, tmp: Path) -> tuple[etree._Element, list[Tap], list[Image]]:
    plan = make_startable(text, name="tvc1", scratch=tmp, tap_prefix="tvc1n",
                          kernel="/k/vmlinuz", initrd="/k/initrd")
    return etree.fromstring(plan.xml.encode()), plan.taps, plan.images


def _el(parent: etree._Element, path: str) -> etree._Element:
    el = parent.find(path)
    assert el is not None, path
    return el


def _attr(parent: etree._Element, path: str, name: str) -> str:
    return str(_el(parent, path).get(name))


def test_host_specific_parts_are_rewritten(tmp_path: Path) -> None:
    root, taps, images = _plan(DOC, tmp_path)
    assert root.get("type") == "qemu" and root.findtext("name") == "tvc1"
    assert root.find("uuid") is None
    assert _attr(root, "cpu", "mode") == "maximum"
    assert root.findtext("memory") == "128" and _attr(root, "memory", "unit") == "MiB"
    assert root.findtext("os/kernel") == "/k/vmlinuz"
    assert root.findtext("devices/emulator") == "/usr/bin/qemu-system-x86_64"
    disk, cdrom = root.findall("devices/disk")
    assert disk.get("type") == "file" and _attr(disk, "source", "dev") == "None"
    assert [(i.path.parent, i.fmt) for i in images] == [(tmp_path, "raw"), (tmp_path, "raw")]
    assert _attr(cdrom, "source", "file") == str(images[1].path)
    nic, user = root.findall("devices/interface")
    assert nic.get("type") == "ethernet" and nic.find("source") is None
    target = _el(nic, "target")
    assert (target.get("dev"), target.get("managed")) == ("tvc1n0", "no")
    assert [c.tag for c in nic] == ["mac", "target", "model", "driver", "mtu"]
    assert taps == [Tap("tvc1n0", True, 9000)]
    assert user.get("type") == "user" and user.find("target") is None
    serial = _attr(root, "devices/serial/source", "path")
    assert serial.startswith(str(tmp_path))
    assert _attr(root, "devices/console/source", "path") == serial  # still the same device
    assert _attr(root, "devices/channel/source", "mode") == "bind"
    assert _attr(root, "devices/channel/source", "path").startswith(str(tmp_path))


@pytest.mark.parametrize("case", sorted(p.with_suffix(".xml") for p in GOLDEN.glob("*.args")),
                         ids=lambda p: p.stem)
def test_accepted_golden_cases_stay_accepted(case: Path, tmp_path: Path) -> None:
    plan = make_startable(case.read_text(), name="tvc1", scratch=tmp_path, tap_prefix="tvc1n",
                          kernel="/k/vmlinuz", initrd="/k/initrd")
    dom = parse_domain(plan.xml, rand=random.Random(0))
    assert dom.name == "tvc1"


SOCKETS = """<domain type='qemu'>
  <name>orig</name><memory unit='MiB'>64</memory>
  <os><type arch='x86_64' machine='pc'>hvm</type></os>
  <devices>
    <interface type='mcast'><source address='230.0.0.1' port='5558'/></interface>
    <interface type='udp'><source address='192.168.10.1' port='5555'>
      <local address='192.168.10.2' port='5556'/></source></interface>
    <interface type='server'><source address='192.168.0.1' port='5557'/></interface>
    <interface type='server'><source port='5559'/></interface>
    <interface type='client'><source address='192.168.0.1' port='5557'/></interface>
  </devices>
</domain>"""


NETWORK_CHARDEVS = """<domain type='qemu'>
  <name>orig</name><memory unit='MiB'>128</memory>
  <os><type arch='x86_64' machine='pc'>hvm</type></os>
  <devices>
    <serial type='tcp'><source mode='connect' host='192.0.2.1' service='9999'/>
      <protocol type='raw'/></serial>
    <serial type='udp'><source mode='bind' host='192.0.2.2' service='9998'/>
      <source mode='connect' service='9997'/></serial>
    <serial type='dev'><source path='/dev/ttyS2'/></serial>
    <serial type='pipe'><source path='/srv/pipe'/></serial>
  </devices>
</domain>"""


def test_socket_interfaces_move_to_loopback(tmp_path: Path) -> None:
    root, taps, _ = _plan(SOCKETS, tmp_path)
    sources = [(s.get("address"), s.get("port"))
               for s in root.iterfind("devices/interface/source")]
    # the multicast group stays; the other machine's addresses become loopback, ports stay
    assert sources == [("230.0.0.1", "5558"), ("127.0.0.1", "5555"), ("127.0.0.1", "5557"),
                       (None, "5559"), ("127.0.0.1", "5557")]
    assert _attr(root, "devices/interface[2]/source/local", "address") == "127.0.0.1"
    assert _attr(root, "devices/interface[2]/source/local", "port") == "5556"
    assert taps == []
    parse_domain(etree.tostring(root, encoding="unicode"), rand=random.Random(1))


def test_network_and_host_chardevs_are_made_local(tmp_path: Path) -> None:
    plan = make_startable(NETWORK_CHARDEVS, name="tvc1", scratch=tmp_path,
                          tap_prefix="tvc1n", kernel="/k/vmlinuz", initrd="/k/initrd")
    root = etree.fromstring(plan.xml.encode())
    tcp, udp, dev, pipe = root.findall("devices/serial")
    # a tcp client has no peer here: it listens, on loopback, on its own port
    source = _el(tcp, "source")
    assert [source.get(k) for k in ("mode", "host", "service")] == ["bind", "127.0.0.1",
                                                                    "9999"]
    bind, connect = udp.findall("source")
    assert (bind.get("host"), bind.get("service")) == ("127.0.0.1", "9998")
    assert connect.get("host") is None and connect.get("service") == "9997"
    assert _attr(dev, "source", "path") == "/dev/null"
    fifo = _attr(pipe, "source", "path")
    assert fifo.startswith(str(tmp_path)) and plan.fifos == [Path(fifo)]
    parse_domain(plan.xml, rand=random.Random(0))  # still accepted


def test_kvm_only_iommu_eim_goes_with_kvm(tmp_path: Path) -> None:
    doc = """<domain type='kvm'><name>orig</name><memory>65536</memory>
      <os><type arch='x86_64' machine='q35'>hvm</type></os>
      <features><ioapic driver='qemu'/></features>
      <devices><iommu model='intel'><driver intremap='on' eim='on' iotlb='on'/></iommu>
      </devices></domain>"""
    root, _, _ = _plan(doc, tmp_path)
    driver = _el(root, "devices/iommu/driver")
    assert (driver.get("eim"), driver.get("intremap"), driver.get("iotlb")) == (None, "on", "on")
    iommu = parse_domain(etree.tostring(root).decode()).devices.iommu
    assert iommu is not None and iommu.eim is None and iommu.intremap is True
