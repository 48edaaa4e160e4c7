"""conf.addresses: libvirt 9.0's address rules, checked against what libvirt itself assigns
(the expected addresses below are those of libvirt's tests/qemuxml2xmloutdata files named
in each test, or of libvirt-oracle.sh runs)."""

from __future__ import annotations

import pytest

from tapvirt.conf.addresses import (
    ADDRESS_CONFLICT,
    ADDRESS_EXHAUSTED,
    ADDRESS_UNUSABLE,
    DriveAddress,
    DriveBus,
    Order,
    PciAddress,
    PciBus,
    PciDevice,
    PciModel,
    Role,
    SerialPort,
    Slot,
    UsbAddress,
    UsbDevice,
    VirtioSerialAddress,
    assign_pci,
    assign_usb,
    assign_virtio_serial,
    disk_index,
    drive_address,
    format_address,
    root_port_target,
)
from tapvirt.errors import TapvirtError

D = PciDevice


def _slots(plan_addresses: dict[object, PciAddress]) -> dict[object, str]:
    return {k: f"{a.bus:02x}:{a.slot:02x}.{a.function}" + ("m" if a.multifunction else "")
            for k, a in plan_addresses.items()}


def test_q35_virt_manager_basic() -> None:
    # libvirt: qemuxml2xmloutdata/q35-virt-manager-basic.x86_64-latest.xml
    devices = [
        D("vda", Order.DISK, Slot.VIRTIO),
        D("usb0", Order.CONTROLLER, Slot.PCIE),  # nec-xhci
        D("sata0", Order.CONTROLLER, Slot.PCI, role=Role.SATA0),
        D("vserial0", Order.CONTROLLER, Slot.VIRTIO),
        D(("pci", 0), Order.PCI_CONTROLLER, PciModel.PCIE_ROOT),
        D("net0", Order.NET, Slot.VIRTIO),
        D("sound0", Order.SOUND, Slot.PCI, role=Role.ICH9_SOUND),
        D("video0", Order.VIDEO, Slot.PCI, role=Role.PRIMARY_VIDEO),
        D("balloon", Order.MEMBALLOON, Slot.VIRTIO),
    ]
    plan = assign_pci("q35", [PciBus(0, PciModel.PCIE_ROOT)], devices)
    got = _slots(plan.addresses)
    assert got["net0"] == "01:00.0"
    assert got["usb0"] == "02:00.0"
    assert got["vserial0"] == "03:00.0"
    assert got["vda"] == "04:00.0"
    assert got["balloon"] == "05:00.0"
    assert got["sata0"] == "00:1f.2"
    assert got["sound0"] == "00:1b.0"
    assert got["video0"] == "00:01.0"
    # five root ports for five devices plus one spare for hotplug, in slot 2
    assert [(a.index, a.model) for a in plan.added] == [
        (i, PciModel.PCIE_ROOT_PORT) for i in range(1, 7)
    ]
    assert [_slots({0: a.address})[0] for a in plan.added if a.address] == [
        "00:02.0m", "00:02.1", "00:02.2", "00:02.3", "00:02.4", "00:02.5"
    ]
    first = plan.added[0].address
    assert first is not None and root_port_target(1, first) == (1, 0x10)


def test_pc_layout() -> None:
    # PIIX3 at slot 1 (IDE 1.1, UHCI 1.2), the primary video at 2, the rest from 3 in
    # libvirt's family order (net, controllers, disks, balloon)
    devices = [
        D("vda", Order.DISK, Slot.VIRTIO),
        D("usb0", Order.CONTROLLER, Slot.PCI, role=Role.PIIX3_USB0),
        D("ide0", Order.CONTROLLER, Slot.PCI, role=Role.IDE0),
        D(("pci", 0), Order.PCI_CONTROLLER, PciModel.PCI_ROOT),
        D("net0", Order.NET, Slot.PCI),
        D("video0", Order.VIDEO, Slot.PCI, role=Role.PRIMARY_VIDEO),
        D("balloon", Order.MEMBALLOON, Slot.VIRTIO),
    ]
    plan = assign_pci("pc", [PciBus(0, PciModel.PCI_ROOT)], devices)
    assert _slots(plan.addresses) == {
        "usb0": "00:01.2", "ide0": "00:01.1", "video0": "00:02.0", "net0": "00:03.0",
        "vda": "00:04.0", "balloon": "00:05.0",
    }
    assert plan.added == ()


def test_given_addresses_are_kept_and_skipped() -> None:
    devices = [
        D(("pci", 0), Order.PCI_CONTROLLER, PciModel.PCI_ROOT),
        D("net0", Order.NET, Slot.PCI, address=PciAddress(slot=3)),
        D("net1", Order.NET, Slot.PCI),
    ]
    plan = assign_pci("pc", [PciBus(0, PciModel.PCI_ROOT)], devices)
    assert _slots(plan.addresses) == {"net0": "00:03.0", "net1": "00:02.0"}


def test_empty_pci_address_means_assign() -> None:
    devices = [D(("pci", 0), Order.PCI_CONTROLLER, PciModel.PCI_ROOT),
               D("net0", Order.NET, Slot.PCI, address=PciAddress())]
    plan = assign_pci("pc", [PciBus(0, PciModel.PCI_ROOT)], devices)
    assert _slots(plan.addresses) == {"net0": "00:02.0"}


def test_q35_conventional_pci_device_gets_a_pcie_to_pci_bridge() -> None:
    devices = [D(("pci", 0), Order.PCI_CONTROLLER, PciModel.PCIE_ROOT),
               D("net0", Order.NET, Slot.PCI)]  # e1000: conventional PCI only
    plan = assign_pci("q35", [PciBus(0, PciModel.PCIE_ROOT)], devices)
    models = [a.model for a in plan.added]
    assert models[:2] == [PciModel.PCIE_ROOT_PORT, PciModel.PCIE_TO_PCI_BRIDGE]
    bridge = plan.added[1]
    net = plan.addresses["net0"]
    assert net.bus == bridge.index and net.slot == 1  # a bridge's slot 0 is its SHPC
    # the bridge sits in the first root port; a second root port stays free for hotplug
    assert bridge.address is not None and bridge.address.bus == 1
    assert models[2:] == [PciModel.PCIE_ROOT_PORT]


def test_double_use_is_refused() -> None:
    devices = [D(("pci", 0), Order.PCI_CONTROLLER, PciModel.PCI_ROOT),
               D("a", Order.NET, Slot.PCI, address=PciAddress(slot=5), where="/x/a"),
               D("b", Order.NET, Slot.PCI, address=PciAddress(slot=5), where="/x/b")]
    with pytest.raises(TapvirtError) as info:
        assign_pci("pc", [PciBus(0, PciModel.PCI_ROOT)], devices)
    assert info.value.code is ADDRESS_CONFLICT
    assert "Attempted double use of PCI Address 0000:00:05.0" in info.value.message
    assert info.value.subject == "/x/b"


def test_primary_ide_must_be_on_piix3() -> None:
    devices = [D(("pci", 0), Order.PCI_CONTROLLER, PciModel.PCI_ROOT),
               D("ide0", Order.CONTROLLER, Slot.PCI, role=Role.IDE0,
                 address=PciAddress(slot=4))]
    with pytest.raises(TapvirtError) as info:
        assign_pci("pc", [PciBus(0, PciModel.PCI_ROOT)], devices)
    assert info.value.code is ADDRESS_UNUSABLE
    assert "Primary IDE controller must have PCI address 0:0:1.1" in info.value.message


def test_bus_without_controller_is_refused_on_pc_but_added_by_the_dry_run() -> None:
    # libvirt's dry run adds the buses a given address needs (pci-autoadd-addr)
    devices = [D(("pci", 0), Order.PCI_CONTROLLER, PciModel.PCI_ROOT),
               D("net0", Order.NET, Slot.PCI, address=PciAddress(bus=2, slot=1))]
    plan = assign_pci("pc", [PciBus(0, PciModel.PCI_ROOT)], devices)
    assert [(a.index, a.model) for a in plan.added] == [
        (1, PciModel.PCI_BRIDGE), (2, PciModel.PCI_BRIDGE)
    ]


def test_pcie_device_address_on_pcie_root_bus_from_config_is_allowed() -> None:
    devices = [D(("pci", 0), Order.PCI_CONTROLLER, PciModel.PCIE_ROOT),
               D("net0", Order.NET, Slot.VIRTIO, address=PciAddress(slot=3))]
    plan = assign_pci("q35", [PciBus(0, PciModel.PCIE_ROOT)], devices)
    assert _slots(plan.addresses)["net0"] == "00:03.0"
    assert plan.added == ()  # nothing auto-added: no spare port either


def test_usb2_companions_share_a_slot() -> None:
    # libvirt: q35-usb2: ehci1 at 1d.7, uhci1-3 at 1d.0 (multifunction) .. 1d.2
    devices = [D(("pci", 0), Order.PCI_CONTROLLER, PciModel.PCIE_ROOT),
               D("ehci", Order.CONTROLLER, Slot.PCI, role=Role.EHCI1),
               D("uhci1", Order.CONTROLLER, Slot.PCI, role=Role.UHCI1),
               D("uhci2", Order.CONTROLLER, Slot.PCI, role=Role.UHCI2),
               D("uhci3", Order.CONTROLLER, Slot.PCI, role=Role.UHCI3)]
    plan = assign_pci("q35", [PciBus(0, PciModel.PCIE_ROOT)], devices)
    assert _slots(plan.addresses) == {
        "ehci": "00:1d.7", "uhci1": "00:1d.0m", "uhci2": "00:1d.1", "uhci3": "00:1d.2"
    }


def test_drive_addresses_from_target_names() -> None:
    assert disk_index("sda") == 0 and disk_index("sdz") == 25 and disk_index("sdaa") == 26
    assert drive_address(DriveBus.IDE, "hdc") == DriveAddress(0, 1, 0, 0)
    assert drive_address(DriveBus.IDE, "hdf") == DriveAddress(1, 0, 0, 1)
    assert drive_address(DriveBus.SATA, "sdg") == DriveAddress(1, 0, 0, 0)
    assert drive_address(DriveBus.SCSI, "sdh") == DriveAddress(1, 0, 0, 0)
    assert drive_address(DriveBus.FDC, "fdb") == DriveAddress(0, 0, 0, 1)


def test_virtio_serial_ports() -> None:
    # q35-virt-manager-basic: the agent channel gets port 1, spice port 2
    plan = assign_virtio_serial([(0, None)], [
        SerialPort("agent", None), SerialPort("spice", None), SerialPort("con", None, True),
    ])
    assert plan.addresses == {"agent": VirtioSerialAddress(0, 0, 1),
                              "spice": VirtioSerialAddress(0, 0, 2)}
    assert plan.added_controllers == ()
    auto = assign_virtio_serial([], [SerialPort("agent", None)])
    assert auto.added_controllers == (0,)
    with pytest.raises(TapvirtError) as info:
        assign_virtio_serial([(0, None)], [SerialPort("a", VirtioSerialAddress(0, 0, 1)),
                                           SerialPort("b", VirtioSerialAddress(0, 0, 1))])
    assert info.value.code is ADDRESS_CONFLICT
    assert "virtio serial port 1 on controller 0 is already occupied" in info.value.message


def test_usb_ports() -> None:
    plan = assign_usb([(0, "qemu-xhci", None)], [
        UsbDevice("tablet", None), UsbDevice("redir0", UsbAddress(0, (3,))),
        UsbDevice("redir1", None),
    ])
    assert plan.addresses == {"tablet": UsbAddress(0, (1,)), "redir0": UsbAddress(0, (3,)),
                              "redir1": UsbAddress(0, (2,))}
    assert plan.added_hubs == ()
    with pytest.raises(TapvirtError) as info:
        assign_usb([(0, "none", None)], [UsbDevice("tablet", None)])
    assert "USB is disabled for this domain" in info.value.message


def test_usb_hub_trees() -> None:
    # libvirt's usb-ports: a hub on a hub; devices on both
    plan = assign_usb([(0, "piix3-uhci", None)], [
        UsbDevice("m0", UsbAddress(0, (1, 1))), UsbDevice("m1", UsbAddress(0, (1, 2, 1))),
        UsbDevice("free", None),
    ], [UsbDevice("h0", UsbAddress(0, (1,))), UsbDevice("h1", UsbAddress(0, (1, 2))),
        UsbDevice("h2", None)])
    assert plan.addresses == {
        "h0": UsbAddress(0, (1,)), "h1": UsbAddress(0, (1, 2)), "h2": UsbAddress(0, (2,)),
        "m0": UsbAddress(0, (1, 1)), "m1": UsbAddress(0, (1, 2, 1)),
        "free": UsbAddress(0, (1, 3)),  # the root ports are full: the first hub's next
    }
    # a hub given after the hub it sits on is needed: document order, as libvirt
    with pytest.raises(TapvirtError) as info:
        assign_usb([(0, "piix3-uhci", None)], [],
                   [UsbDevice("h1", UsbAddress(0, (1, 2))), UsbDevice("h0", UsbAddress(0, (1,)))])
    assert info.value.code is ADDRESS_UNUSABLE
    assert "there is no hub at port 1 in USB address bus: 0 port: 1.2" in info.value.message


def test_usb_hubs_added_for_too_many_devices() -> None:
    # 2 root ports, 4 devices: one hub (libvirt's usb-hub-autoadd)
    plan = assign_usb([(0, "piix3-uhci", None)], [UsbDevice(n, None) for n in "abcd"])
    assert plan.added_hubs == (UsbAddress(0, (1,)),)
    assert [plan.addresses[n].port_text for n in "abcd"] == ["2", "1.1", "1.2", "1.3"]
    # 16 devices: 3 hubs, the third on the first (libvirt's usb-hub-autoadd-deluxe)
    many = [UsbDevice(n, None) for n in range(16)]
    plan = assign_usb([(0, "piix3-uhci", None)], many)
    assert [a.port_text for a in plan.added_hubs] == ["1", "2", "1.1"]
    ports = [plan.addresses[n].port_text for n in range(16)]
    assert ports[0] == "1.2" and ports[7] == "1.1.1" and ports[15] == "2.1"
    assert len(set(ports)) == 16


def test_usb_no_free_port_on_the_requested_bus() -> None:
    # the added hub goes on bus 0; devices that ask for bus 1 do not fit its 2 ports
    with pytest.raises(TapvirtError) as info:
        assign_usb([(0, "piix3-uhci", None), (1, "piix3-uhci", None)],
                   [UsbDevice(n, UsbAddress(1, ())) for n in range(5)])
    assert info.value.code is ADDRESS_EXHAUSTED
    assert info.value.cause == "No free USB ports"


def test_format() -> None:
    assert format_address(PciAddress(0, 0, 2, 0, True)) == (
        "<address type='pci' domain='0x0000' bus='0x00' slot='0x02' function='0x0' "
        "multifunction='on'/>"
    )
    assert format_address(DriveAddress(0, 1, 0, 0)) == (
        "<address type='drive' controller='0' bus='1' target='0' unit='0'/>"
    )
    assert format_address(UsbAddress(0, (1, 2))) == "<address type='usb' bus='0' port='1.2'/>"
