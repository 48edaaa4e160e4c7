"""The hotplug steps (pure): libvirt's QMP sequence for a NIC (oracle sample 13), their
undo commands, and PCI placement on q35."""

from __future__ import annotations

import pytest

from tapvirt.conf.model import Interface, InterfaceType, LinkState, NicModel, Target
from tapvirt.errors import TapvirtError
from tapvirt.qemu.argv import NetBackend
from tapvirt.qemu.argv.hotplug import free_root_port, nic_attach, nic_detach


def test_sample_13_sequence() -> None:
    """Oracle sample 13: an unmanaged 2-queue tap, link down, hot-plugged as net1."""
    iface = Interface(InterfaceType.ETHERNET, "52:54:00:13:13:02", NicModel.VIRTIO,
                      target=Target("hptap0", managed=False), link_state=LinkState.DOWN,
                      alias="net1")
    steps, fds = nic_attach(iface, "net1", NetBackend("net1", "tap", (7, 8)))
    sent = [{"execute": s["execute"], "arguments": s["arguments"]} for s in steps]
    assert sent == [
        {"execute": "getfd", "arguments": {"fdname": "tapfd-net10"}},
        {"execute": "getfd", "arguments": {"fdname": "tapfd-net11"}},
        {"execute": "netdev_add", "arguments": {"type": "tap", "fds": "tapfd-net10:tapfd-net11",
                                                "id": "hostnet1"}},
        {"execute": "device_add", "arguments": {
            "driver": "virtio-net-pci", "mq": True, "vectors": 6, "netdev": "hostnet1",
            "id": "net1", "mac": "52:54:00:13:13:02"}},
        {"execute": "set_link", "arguments": {"name": "net1", "up": False}},
    ]
    assert fds == [7, 8] and [s.get("fd") for s in steps[:2]] == [0, 1]
    # everything that adds something can be taken back
    assert [s["undo"]["execute"] for s in steps[:4]] == ["closefd", "closefd", "netdev_del",
                                                         "device_del"]


def test_detach_waits_for_the_guest_then_removes_the_backend() -> None:
    steps = nic_detach("net1", "52:54:00:13:13:02", timeout=3)
    assert [s.get("execute") or s.get("wait_event") for s in steps] == [
        "device_del", "DEVICE_DELETED", "netdev_del"]
    assert steps[0]["tolerate"] == {"DeviceNotFound": 1}  # gone already: skip the wait
    assert steps[1]["error"]["code"] == "hotplug-refused" and steps[1]["timeout"] == 3


def test_q35_needs_a_free_root_port() -> None:
    bridge = {"class_info": {"desc": "PCI bridge", "class": 1540}}
    pci = [{"bus": 0, "devices": [
        {"qdev_id": "pci.1", "pci_bridge": {"bus": {}, "devices": [{"qdev_id": "net0"}]},
         **bridge},
        {"qdev_id": "pci.2", "pci_bridge": {"bus": {}, "devices": []}, **bridge},
        {"qdev_id": "", "class_info": {"desc": "Ethernet controller"}},
    ]}]
    assert free_root_port(pci) == "pci.2"
    with pytest.raises(TapvirtError) as exc:
        free_root_port(pci, taken=frozenset({"pci.2"}))
    assert exc.value.code.code == "no-pci-slot"
    assert "<controller type='pci' model='pcie-root-port'/>" in exc.value.fix


def test_socket_nic_is_hot_plugged_without_fds() -> None:
    from tapvirt.conf.devices.netsocket import SocketSource
    from tapvirt.qemu.argv import socket_options

    iface = Interface(InterfaceType.UDP, "52:54:00:13:13:03", NicModel.E1000,
                      source=SocketSource("127.0.0.1", 5555, "127.0.0.1", 5556), alias="net2")
    steps, fds = nic_attach(iface, "net2", NetBackend("net2", "socket",
                                                      socket=socket_options(iface)))
    assert fds == []
    assert [(s["execute"], s["arguments"]) for s in steps] == [
        ("netdev_add", {"type": "socket", "udp": "127.0.0.1:5555",
                        "localaddr": "127.0.0.1:5556", "id": "hostnet2"}),
        ("device_add", {"driver": "e1000", "netdev": "hostnet2", "id": "net2",
                        "mac": "52:54:00:13:13:03"}),
    ]


def test_memory_attach_adds_the_command_lines_objects_then_the_dimm() -> None:
    """A hot-plugged dimm gets exactly the -object's and -device the command line gives
    the same dimm (tests/data/xml2argv/memory-hotplug-dimm.args, oracle-checked): the
    thread-context and backend by object-add, the pc-dimm by device_add, each undone."""
    import json
    from itertools import pairwise
    from pathlib import Path

    from tapvirt.conf.parse import parse_domain_file
    from tapvirt.qemu.argv.hotplug import memory_attach

    data = Path(__file__).resolve().parents[2] / "data" / "xml2argv"
    dom = parse_domain_file(data / "memory-hotplug-dimm.xml")
    args = (data / "memory-hotplug-dimm.args").read_text().splitlines()
    cmdline = [json.loads(v) for k, v in pairwise(args)
               if k in ("-object", "-device") and "memdimm1" in v]
    mem = next(m for m in dom.devices.memories if m.alias == "dimm1")
    steps = memory_attach(dom, mem)
    assert [s["arguments"] for s in steps] == cmdline
    assert [s["execute"] for s in steps] == ["object-add", "object-add", "device_add"]
    assert [s["undo"]["execute"] for s in steps] == ["object-del", "object-del", "device_del"]
    assert steps[0]["arguments"]["qom-type"] == "thread-context"


def test_virtio_mem_is_not_hot_plugged_yet() -> None:
    from pathlib import Path

    from tapvirt.conf.parse import parse_domain_file
    from tapvirt.qemu.argv.hotplug import memory_attach

    data = Path(__file__).resolve().parents[2] / "data" / "xml2argv"
    dom = parse_domain_file(data / "memory-hotplug-virtio-mem.xml")
    with pytest.raises(TapvirtError) as info:
        memory_attach(dom, dom.devices.memories[0])
    assert info.value.code.code == "hotplug-unsupported"
    assert "--config" in info.value.fix
