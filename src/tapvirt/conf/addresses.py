"""Device addresses: the `<address>` element (model, parse, format) and the rules by
which libvirt 9.0 assigns the addresses a definition leaves out.

Pure. The assignment functions take plain descriptions of the devices (a key the caller
maps back, the kind of slot a device needs, the address it was given) and return the
addresses, so that the post-parse step (`tapvirt.conf.defaults`) can write them into the
stored definition: a guest then keeps its hardware, and its NIC names (enp1s0), across
starts, as under libvirt.

The rules follow libvirt 9.0's `src/qemu/qemu_domain_address.c` and
`src/conf/domain_addr.c` for x86 pc (i440FX) and q35 machines with QEMU 7.2: the order in
which device families get slots, the slots the chipsets reserve (PIIX3 at 00:01, ICH9
at 00:1f, the primary video card), the two passes (a dry run that finds out how many
buses are needed and adds pcie-root-ports / pci-bridges, then the real assignment),
one spare pcie-root-port for hotplug on a new q35 guest, and `multifunction='on'` on
function 0 of every slot with several functions. The messages are libvirt's.
"""

from __future__ import annotations

import re
from collections.abc import Hashable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from enum import Enum, IntEnum, IntFlag, StrEnum
from typing import TYPE_CHECKING

from tapvirt.errors import ErrorCode, TapvirtError, define

if TYPE_CHECKING:
    from lxml import etree

    from tapvirt.conf.xml import Reader as _Parser

_L = "conf"
ADDRESS_INVALID = define(
    "address-invalid", "an <address> value is malformed or out of range", layer=_L
)
ADDRESS_TYPE = define(
    "address-type", "an <address> type the device cannot have", layer=_L
)
ADDRESS_CONFLICT = define(
    "address-conflict", "two devices are given the same address", layer=_L
)
ADDRESS_UNUSABLE = define(
    "address-unusable",
    "an address on a bus that does not exist or does not accept the device",
    layer=_L,
)
ADDRESS_EXHAUSTED = define(
    "address-exhausted", "no free slot or port is left for a device without an address",
    layer=_L,
)


# --- the model ------------------------------------------------------------------------


class AddressType(StrEnum):
    PCI = "pci"
    DRIVE = "drive"
    VIRTIO_SERIAL = "virtio-serial"
    USB = "usb"
    CCID = "ccid"


@dataclass(frozen=True)
class PciAddress:
    """domain:bus:slot.function; all of domain, bus and slot 0 means "any PCI slot"."""

    domain: int = 0
    bus: int = 0
    slot: int = 0
    function: int = 0
    multifunction: bool | None = None

    @property
    def empty(self) -> bool:
        return not (self.domain or self.bus or self.slot)

    def __str__(self) -> str:  # libvirt's virPCIDeviceAddressAsString
        return f"{self.domain:04x}:{self.bus:02x}:{self.slot:02x}.{self.function}"


@dataclass(frozen=True)
class DriveAddress:
    controller: int = 0
    bus: int = 0
    target: int = 0
    unit: int = 0


@dataclass(frozen=True)
class VirtioSerialAddress:
    controller: int = 0
    bus: int = 0
    port: int = 0  # 0: any free port


@dataclass(frozen=True)
class UsbAddress:
    bus: int = 0
    port: tuple[int, ...] = ()  # '1.2' is (1, 2): port 2 of the hub on port 1; () = any

    @property
    def port_text(self) -> str:
        return ".".join(str(p) for p in self.port)


@dataclass(frozen=True)
class CcidAddress:
    controller: int = 0
    slot: int = 0


Address = PciAddress | DriveAddress | VirtioSerialAddress | UsbAddress | CcidAddress

_TYPES: dict[AddressType, type[Address]] = {
    AddressType.PCI: PciAddress,
    AddressType.DRIVE: DriveAddress,
    AddressType.VIRTIO_SERIAL: VirtioSerialAddress,
    AddressType.USB: UsbAddress,
    AddressType.CCID: CcidAddress,
}


def address_type(addr: Address) -> AddressType:
    return next(t for t, cls in _TYPES.items() if isinstance(addr, cls))


# --- parse and format ------------------------------------------------------------------

_UINT_ANY_BASE = re.compile(r"(?:0[xX][0-9a-fA-F]+|0[0-7]*|[1-9][0-9]*)\Z")
_UINT_DEC = re.compile(r"[0-9]+\Z")
_USB_PORT = re.compile(r"[0-9]{1,3}(?:\.[0-9]{1,3}){0,3}\Z")  # libvirt: at most 4 levels
MAX_UINT = 2**32 - 1
USB_MAX_PORT_DEPTH = 4


def parse_address(
    p: _Parser, el: etree._Element, allowed: Iterable[AddressType], device: str
) -> Address:
    """`<address type=...>` of `device` (named in errors); `allowed`: the types it may have."""
    raw = el.get("type")
    if raw is None:
        p.shape(el, ("type",), required_attrs=("type",))
    choices = [t.value for t in AddressType]
    if raw not in choices:
        raise p.fail(
            ADDRESS_TYPE, el, f"unknown address type '{str(raw)[:40]}'",
            f"use one of: {', '.join(choices)}", attr="type",
        )
    atype = AddressType(raw)
    ok = tuple(allowed)
    if atype not in ok:
        raise p.fail(
            ADDRESS_TYPE, el, f"{device} cannot have an address of type '{atype}'",
            "remove <address> to have one assigned" + (
                f", or use type='{ok[0]}'" if ok else " (this device has no address)"
            ), attr="type",
        )
    if atype is AddressType.PCI:
        p.shape(el, ("type", "domain", "bus", "slot", "function", "multifunction"))
        pci = PciAddress(
            domain=_num(p, el, "domain", 0xFFFF, any_base=True),
            bus=_num(p, el, "bus", MAX_UINT, any_base=True),
            slot=_num(p, el, "slot", MAX_UINT, any_base=True),
            function=_num(p, el, "function", MAX_UINT, any_base=True),
            multifunction=_onoff(p, el, "multifunction"),
        )
        if not pci.empty or pci.function:
            _pci_valid(p, el, pci)
        return pci
    if atype is AddressType.DRIVE:
        p.shape(el, ("type", "controller", "bus", "target", "unit"))
        return DriveAddress(*(_num(p, el, a, MAX_UINT) for a in
                              ("controller", "bus", "target", "unit")))
    # libvirt's schema requires controller= on virtio-serial and ccid addresses (its
    # parser would read 0): refused by name, as a USB address without bus
    if atype is AddressType.VIRTIO_SERIAL:
        p.shape(el, ("type", "controller", "bus", "port"), required_attrs=("controller",))
        return VirtioSerialAddress(*(_num(p, el, a, MAX_UINT) for a in
                                     ("controller", "bus", "port")))
    if atype is AddressType.CCID:
        p.shape(el, ("type", "controller", "slot"), required_attrs=("controller",))
        return CcidAddress(_num(p, el, "controller", MAX_UINT), _num(p, el, "slot", MAX_UINT))
    # libvirt's parser reads a missing bus as 0, but its schema requires it (and tapvirt
    # accepts only what virt-xml-validate accepts): refused by name
    p.shape(el, ("type", "bus", "port"), required_attrs=("bus",))
    port: tuple[int, ...] = ()
    if (text := el.get("port")) is not None:
        if not _USB_PORT.match(text):
            raise p.fail(
                ADDRESS_INVALID, el, "Cannot parse <address> 'port' attribute",
                "write the port path as numbers joined by dots, e.g. port='1' or "
                "port='1.2' (at most 4 levels)", attr="port",
            )
        port = tuple(int(x) for x in text.split("."))
        if 0 in port:
            port = ()  # libvirt: a path with a zero is "not given", the port is assigned
    return UsbAddress(_num(p, el, "bus", MAX_UINT), port)


def _num(p: _Parser, el: etree._Element, attr: str, hi: int, *, any_base: bool = False) -> int:
    raw = el.get(attr)
    if raw is None:
        return 0
    pattern = _UINT_ANY_BASE if any_base else _UINT_DEC
    if len(raw) > 12 or not pattern.match(raw):
        expect = "integer value (decimal, 0x hex or 0 octal)" if any_base else "integer value"
        raise p.fail(
            ADDRESS_INVALID, el,
            f"Invalid value for attribute '{attr}' in element 'address': '{raw[:40]}'. "
            f"Expected {expect}", f"write {attr}='0x1' or {attr}='1'", attr=attr,
        )
    if any_base and raw[:2] in ("0x", "0X"):
        value = int(raw, 16)
    elif any_base and len(raw) > 1 and raw[0] == "0":
        value = int(raw, 8)  # strtoul's base 0, as libvirt reads PCI addresses
    else:
        value = int(raw)
    if value > hi:
        raise p.fail(
            ADDRESS_INVALID, el, f"attribute '{attr}' of <address> is {raw}, above {hi:#x}",
            f"write a {attr} in 0..{hi:#x}", attr=attr,
        )
    return value


def _onoff(p: _Parser, el: etree._Element, attr: str) -> bool | None:
    raw = el.get(attr)
    if raw is None:
        return None
    if raw not in ("on", "off"):
        raise p.fail(
            ADDRESS_INVALID, el,
            f"Invalid value for attribute '{attr}' in element 'address': '{raw[:40]}'.",
            f"write {attr}='on' or {attr}='off'", attr=attr,
        )
    return raw == "on"


def _pci_valid(p: _Parser, el: etree._Element, a: PciAddress) -> None:
    """libvirt's virPCIDeviceAddressIsValid, with its messages."""
    if a.bus > 0xFF:
        cause, attr = f"Invalid PCI address bus='{a.bus:#x}', must be <= 0xFF", "bus"
    elif a.slot > 0x1F:
        cause, attr = f"Invalid PCI address slot='{a.slot:#x}', must be <= 0x1F", "slot"
    elif a.function > 7:
        cause, attr = f"Invalid PCI address function={a.function:#x}, must be <= 7", "function"
    elif a.empty:
        cause, attr = (
            "Invalid PCI address 0000:00:00, at least one of domain, bus, or slot must be > 0",
            "slot",
        )
    else:
        return
    raise p.fail(ADDRESS_INVALID, el, cause, "use bus 0x00-0xff, slot 0x00-0x1f, function 0-7 "
                 "(slot 0 of bus 0 is the host bridge)", attr=attr)


def format_address(addr: Address) -> str:
    """The `<address .../>` element, as libvirt writes it."""
    if isinstance(addr, PciAddress):
        multi = "" if addr.multifunction is None else (
            f" multifunction='{'on' if addr.multifunction else 'off'}'"
        )
        return (f"<address type='pci' domain='0x{addr.domain:04x}' bus='0x{addr.bus:02x}' "
                f"slot='0x{addr.slot:02x}' function='0x{addr.function:x}'{multi}/>")
    if isinstance(addr, DriveAddress):
        return (f"<address type='drive' controller='{addr.controller}' bus='{addr.bus}' "
                f"target='{addr.target}' unit='{addr.unit}'/>")
    if isinstance(addr, VirtioSerialAddress):
        return (f"<address type='virtio-serial' controller='{addr.controller}' "
                f"bus='{addr.bus}' port='{addr.port}'/>")
    if isinstance(addr, CcidAddress):
        return f"<address type='ccid' controller='{addr.controller}' slot='{addr.slot}'/>"
    port = f" port='{addr.port_text}'" if addr.port else ""
    return f"<address type='usb' bus='{addr.bus}'{port}/>"


# --- drive addresses from target names ----------------------------------------------------


class DriveBus(StrEnum):
    IDE = "ide"
    SATA = "sata"
    SCSI = "scsi"
    FDC = "fdc"


def disk_index(target: str) -> int:
    """libvirt's virDiskNameToIndex: the letters after the prefix, sda=0, sdz=25, sdaa=26."""
    m = re.match(r"(?:fd|hd|vd|sd|xvd|ubd)([a-z]+)", target)
    if m is None:
        return -1
    idx = 0
    for i, c in enumerate(m.group(1)):
        idx = (idx + (1 if i else 0)) * 26 + (ord(c) - ord("a"))
    return idx


def drive_address(bus: DriveBus, target: str) -> DriveAddress:
    """libvirt's virDomainDiskDefAssignAddress for a disk without <address>."""
    idx = disk_index(target)
    assert idx >= 0, "callers validate the target name first"
    if bus is DriveBus.SCSI:  # narrow SCSI: 7 units per bus, one bus per controller
        return DriveAddress(controller=idx // 7, unit=idx % 7)
    if bus is DriveBus.IDE:  # 2 units per bus, 2 buses per controller
        return DriveAddress(controller=idx // 4, bus=(idx % 4) // 2, unit=idx % 2)
    if bus is DriveBus.SATA:  # 6 ports per AHCI controller
        return DriveAddress(controller=idx // 6, unit=idx % 6)
    return DriveAddress(controller=idx // 2, unit=idx % 2)


# --- PCI ------------------------------------------------------------------------------


class Connect(IntFlag):
    """libvirt's virDomainPCIConnectFlags: what a device needs / what a bus accepts."""

    AUTOASSIGN = 1 << 0
    HOTPLUGGABLE = 1 << 1
    INTEGRATED = 1 << 2
    AGGREGATE_SLOT = 1 << 3
    PCI_DEVICE = 1 << 4
    PCIE_DEVICE = 1 << 5
    PCIE_ROOT_PORT = 1 << 6
    PCIE_SWITCH_UPSTREAM_PORT = 1 << 7
    PCIE_SWITCH_DOWNSTREAM_PORT = 1 << 8
    DMI_TO_PCI_BRIDGE = 1 << 9
    PCI_EXPANDER_BUS = 1 << 10
    PCIE_EXPANDER_BUS = 1 << 11
    PCI_BRIDGE = 1 << 12
    PCIE_TO_PCI_BRIDGE = 1 << 13


_TYPES_MASK = Connect(
    Connect.PCI_DEVICE | Connect.PCIE_DEVICE | Connect.PCIE_SWITCH_UPSTREAM_PORT
    | Connect.PCIE_SWITCH_DOWNSTREAM_PORT | Connect.PCIE_ROOT_PORT | Connect.DMI_TO_PCI_BRIDGE
    | Connect.PCI_EXPANDER_BUS | Connect.PCIE_EXPANDER_BUS | Connect.PCI_BRIDGE
    | Connect.PCIE_TO_PCI_BRIDGE
)
_ENDPOINT = Connect.PCI_DEVICE | Connect.PCIE_DEVICE
_NONE = Connect(0)


class PciModel(StrEnum):
    """`<controller type='pci' model=...>`."""

    PCI_ROOT = "pci-root"
    PCIE_ROOT = "pcie-root"
    PCI_BRIDGE = "pci-bridge"
    DMI_TO_PCI_BRIDGE = "dmi-to-pci-bridge"
    PCIE_ROOT_PORT = "pcie-root-port"
    PCIE_SWITCH_UPSTREAM_PORT = "pcie-switch-upstream-port"
    PCIE_SWITCH_DOWNSTREAM_PORT = "pcie-switch-downstream-port"
    PCI_EXPANDER_BUS = "pci-expander-bus"
    PCIE_EXPANDER_BUS = "pcie-expander-bus"
    PCIE_TO_PCI_BRIDGE = "pcie-to-pci-bridge"

    @property
    def is_root(self) -> bool:
        return self in (PciModel.PCI_ROOT, PciModel.PCIE_ROOT)

    @property
    def connect(self) -> Connect:
        """What the controller itself needs upstream (virDomainPCIControllerModelToConnectType)."""
        return _MODEL_CONNECT[self]


_MODEL_CONNECT: dict[PciModel, Connect] = {
    PciModel.PCI_ROOT: _NONE,
    PciModel.PCIE_ROOT: _NONE,
    PciModel.PCI_BRIDGE: Connect.PCI_BRIDGE,
    PciModel.PCI_EXPANDER_BUS: Connect.PCI_EXPANDER_BUS,
    PciModel.PCIE_EXPANDER_BUS: Connect.PCIE_EXPANDER_BUS,
    PciModel.DMI_TO_PCI_BRIDGE: Connect.DMI_TO_PCI_BRIDGE,
    PciModel.PCIE_TO_PCI_BRIDGE: Connect.PCIE_TO_PCI_BRIDGE,
    PciModel.PCIE_ROOT_PORT: Connect.PCIE_ROOT_PORT | Connect.AGGREGATE_SLOT,
    PciModel.PCIE_SWITCH_UPSTREAM_PORT: Connect.PCIE_SWITCH_UPSTREAM_PORT,
    PciModel.PCIE_SWITCH_DOWNSTREAM_PORT: Connect.PCIE_SWITCH_DOWNSTREAM_PORT,
}


class Chipset(Enum):
    I440FX = "pc"
    Q35 = "q35"


def chipset(machine: str | None) -> Chipset | None:
    """qemuDomainIsI440FX / qemuDomainIsQ35; None for machines with neither."""
    m = machine or "pc"
    if m == "q35" or m.startswith("pc-q35"):
        return Chipset.Q35
    if m == "pc" or m.startswith(("pc-i440fx-", "pc-0.", "pc-1.")):
        return Chipset.I440FX
    return None


class Slot(Enum):
    """What kind of PCI slot a device wants (libvirt's pciFlags, pcieFlags, virtioFlags)."""

    PCI = "pci"  # conventional PCI only (e1000, rtl8139, piix3-uhci, lsilogic ...)
    PCIE = "pcie"  # PCI Express where the machine has it (e1000e, qemu-xhci, nec-xhci)
    VIRTIO = "virtio"  # virtio 1.0 devices: PCI Express on q35, QEMU 7.2 has transitional
    VIRTIO_INTEGRATED = "virtio-integrated"  # virtio-iommu: a virtio slot on the root bus


def slot_flags(kind: Slot | PciModel, pcie_machine: bool) -> Connect:
    if isinstance(kind, PciModel):
        return kind.connect
    if kind is Slot.VIRTIO_INTEGRATED:
        return slot_flags(Slot.VIRTIO, pcie_machine) | Connect.INTEGRATED
    if kind is Slot.PCI or not pcie_machine:
        return Connect.PCI_DEVICE | Connect.AUTOASSIGN
    return Connect.PCIE_DEVICE | Connect.AUTOASSIGN


class Order(IntEnum):
    """The order in which qemuDomainAssignDevicePCISlots hands out slots."""

    PCI_CONTROLLER = 0
    FILESYSTEM = 1
    NET = 2
    SOUND = 3
    CONTROLLER = 4  # USB, SCSI, SATA, virtio-serial, IDE > 0 ... in controller order
    DISK = 5  # virtio disks
    HOSTDEV = 6
    MEMBALLOON = 7
    RNG = 8
    WATCHDOG = 9
    VIDEO = 10
    SHMEM = 11
    INPUT = 12  # virtio input
    SERIAL = 13  # pci-serial
    IOMMU = 14
    VSOCK = 15
    MEMORY = 16


class Role(Enum):
    """Devices a chipset places itself."""

    NONE = "none"
    PRIMARY_VIDEO = "primary-video"  # pc: 00:02.0, q35: 00:01.0 when free
    IDE0 = "ide0"  # PIIX3: always 00:01.1
    PIIX3_USB0 = "piix3-usb0"  # PIIX3's UHCI, USB controller 0: always 00:01.2
    SATA0 = "sata0"  # ICH9: always 00:1f.2
    ICH9_SOUND = "ich9-sound"  # q35: 00:1b.0 when free
    DMI_BRIDGE = "dmi-to-pci-bridge"  # q35: 00:1e.0 when free
    EHCI1 = "ich9-ehci1"  # USB2 controller and its companions share one slot
    UHCI1 = "ich9-uhci1"
    UHCI2 = "ich9-uhci2"
    UHCI3 = "ich9-uhci3"


_USB2_FUNCTION = {Role.EHCI1: (7, None), Role.UHCI1: (0, True), Role.UHCI2: (1, None),
                  Role.UHCI3: (2, None)}


@dataclass(frozen=True)
class PciDevice:
    """One device that lives on PCI (or may: `address` of another type means it does not)."""

    key: Hashable  # the caller's name for the device, returned with its address
    order: Order
    kind: Slot | PciModel
    address: PciAddress | None = None
    where: str = "/domain/devices"  # the element, for errors
    line: int | None = None
    role: Role = Role.NONE
    usb_index: int = 0  # USB2 companions: the controller index they share
    skip: bool = False  # present for collection only (e.g. ncr53c90, usb model none)


@dataclass(frozen=True)
class PciBus:
    """A `<controller type='pci'>` given in the definition."""

    index: int
    model: PciModel
    hotplug: bool = True


@dataclass(frozen=True)
class AddedController:
    index: int
    model: PciModel
    address: PciAddress | None


@dataclass(frozen=True)
class PciPlan:
    addresses: dict[Hashable, PciAddress]
    added: tuple[AddedController, ...] = ()


@dataclass
class _Bus:
    model: PciModel
    flags: Connect
    min_slot: int
    max_slot: int
    functions: list[int] = field(default_factory=lambda: [0] * 32)
    aggregate: list[bool] = field(default_factory=lambda: [False] * 32)

    @classmethod
    def of(cls, model: PciModel, hotplug: bool = True) -> _Bus:
        """virDomainPCIAddressBusSetModel: what may be plugged in *downstream*."""
        hp = Connect.HOTPLUGGABLE if hotplug else _NONE
        A, C = Connect.AUTOASSIGN, Connect
        table: dict[PciModel, tuple[Connect, int, int]] = {
            PciModel.PCI_ROOT: (A | C.PCI_DEVICE | C.PCI_BRIDGE | C.PCI_EXPANDER_BUS | hp, 1, 31),
            PciModel.PCI_BRIDGE: (A | C.PCI_DEVICE | C.PCI_BRIDGE | hp, 1, 31),
            PciModel.PCI_EXPANDER_BUS: (A | C.PCI_DEVICE | C.PCI_BRIDGE | hp, 0, 31),
            PciModel.PCIE_ROOT: (C.PCIE_DEVICE | C.PCIE_ROOT_PORT | C.DMI_TO_PCI_BRIDGE
                                 | C.PCIE_EXPANDER_BUS, 1, 31),
            PciModel.DMI_TO_PCI_BRIDGE: (C.PCI_DEVICE | C.PCI_BRIDGE, 0, 31),
            PciModel.PCIE_TO_PCI_BRIDGE: (A | C.PCI_DEVICE | C.PCI_BRIDGE | hp, 1, 31),
            PciModel.PCIE_ROOT_PORT: (A | C.PCIE_DEVICE | C.PCIE_SWITCH_UPSTREAM_PORT
                                      | C.PCIE_TO_PCI_BRIDGE | hp, 0, 0),
            PciModel.PCIE_SWITCH_DOWNSTREAM_PORT: (A | C.PCIE_DEVICE
                                                   | C.PCIE_SWITCH_UPSTREAM_PORT
                                                   | C.PCIE_TO_PCI_BRIDGE | hp, 0, 0),
            PciModel.PCIE_SWITCH_UPSTREAM_PORT: (C.PCIE_SWITCH_DOWNSTREAM_PORT, 0, 31),
            PciModel.PCIE_EXPANDER_BUS: (C.PCIE_ROOT_PORT | C.DMI_TO_PCI_BRIDGE, 0, 31),
        }
        flags, lo, hi = table[model]
        return cls(model, flags, lo, hi)

    def fully_reserved(self) -> bool:
        return all(self.functions[s] for s in range(self.min_slot, self.max_slot + 1))


_CONNECT_NAMES = (
    (Connect.PCI_DEVICE, "standard PCI device"), (Connect.PCIE_DEVICE, "PCI Express device"),
    (Connect.PCIE_ROOT_PORT, "pcie-root-port"),
    (Connect.PCIE_SWITCH_UPSTREAM_PORT, "pcie-switch-upstream-port"),
    (Connect.PCIE_SWITCH_DOWNSTREAM_PORT, "pcie-switch-downstream-port"),
    (Connect.DMI_TO_PCI_BRIDGE, "dmi-to-pci-bridge"),
    (Connect.PCIE_TO_PCI_BRIDGE, "pcie-to-pci-bridge"),
    (Connect.PCI_EXPANDER_BUS, "pci-expander-bus"),
    (Connect.PCIE_EXPANDER_BUS, "pcie-expander-bus"), (Connect.PCI_BRIDGE, "pci-bridge"),
)


class _AddressSet:
    """virDomainPCIAddressSet: the buses and which of their functions are taken."""

    def __init__(self, buses: list[_Bus], dry_run: bool) -> None:
        self.buses = buses
        self.dry_run = dry_run
        self.owner: dict[tuple[int, int, int], str] = {}  # (bus, slot, function) -> element

    # errors name the device; internal ones (an auto-assigned address) cannot happen
    # after the dry run, so every error here is about what the user wrote
    @staticmethod
    def _fail(dev: PciDevice | None, code: ErrorCode, cause: str, fix: str) -> TapvirtError:
        where = dev.where if dev is not None else "/domain/devices"
        return TapvirtError(code, where, cause, fix, line=dev.line if dev else None)

    def compatible(self, a: PciAddress, bus_flags: Connect, dev_flags: Connect, *,
                   from_config: bool, dev: PciDevice | None, report: bool) -> bool:
        if dev_flags & Connect.INTEGRATED:
            if a.bus != 0:
                if report:
                    raise self._fail(dev, ADDRESS_UNUSABLE, f"The device at PCI address {a} "
                                     "needs to be an integrated device (bus=0)", "use bus='0x00'")
                return False
            bus_flags |= Connect.AUTOASSIGN
        if from_config:
            if bus_flags & _ENDPOINT:
                bus_flags |= _ENDPOINT
            if dev_flags & Connect.PCI_BRIDGE:
                dev_flags |= Connect.PCI_DEVICE
        elif dev_flags & Connect.AUTOASSIGN and not bus_flags & Connect.AUTOASSIGN:
            return False
        if dev_flags & Connect.HOTPLUGGABLE and not bus_flags & Connect.HOTPLUGGABLE:
            if report:
                raise self._fail(dev, ADDRESS_UNUSABLE, f"The device at PCI address {a} requires "
                                 f"hotplug capability, but the PCI controller with "
                                 f"index='{a.bus}' doesn't support hotplug",
                                 "put the device on a controller with hotplug")
            return False
        if not dev_flags & bus_flags & _TYPES_MASK:
            if report:
                need = next((n for f, n in _CONNECT_NAMES if dev_flags & f), "PCI device")
                raise self._fail(
                    dev, ADDRESS_UNUSABLE,
                    f"The device at PCI address {a} cannot be plugged into the PCI controller "
                    f"with index='{a.bus}'. It requires a controller that accepts a {need}.",
                    "remove <address> to have a suitable slot assigned, or give a bus that "
                    f"accepts a {need}",
                )
            return False
        return True

    def validate(self, a: PciAddress, flags: Connect, from_config: bool,
                 dev: PciDevice | None) -> None:
        fix = "remove <address> to have one assigned"
        if not self.buses:
            raise self._fail(dev, ADDRESS_UNUSABLE, "No PCI buses available", fix)
        if a.domain != 0:
            raise self._fail(dev, ADDRESS_UNUSABLE,
                             f"Invalid PCI address {a}. Only PCI domain 0 is available",
                             "use domain='0x0000'")
        if a.bus >= len(self.buses):
            raise self._fail(dev, ADDRESS_UNUSABLE, f"Invalid PCI address {a}. Only PCI buses "
                             f"up to {len(self.buses) - 1} are available",
                             "add a <controller type='pci'> with that index, or " + fix)
        bus = self.buses[a.bus]
        self.compatible(a, bus.flags, flags, from_config=from_config, dev=dev, report=True)
        if bus.min_slot and a.slot < bus.min_slot:
            raise self._fail(dev, ADDRESS_UNUSABLE,
                             f"Invalid PCI address {a}. slot must be >= {bus.min_slot}", fix)
        if a.slot > bus.max_slot:
            raise self._fail(dev, ADDRESS_UNUSABLE,
                             f"Invalid PCI address {a}. slot must be <= {bus.max_slot}",
                             "a pcie-root-port has one slot, 0x00: " + fix
                             if bus.max_slot == 0 else fix)

    def grow(self, a: PciAddress, flags: Connect) -> PciAddress:
        """virDomainPCIAddressSetGrow (dry run only): add the buses `a` needs."""
        add = a.bus - len(self.buses) + 1
        if add <= 0:
            return a
        need_pcie_bridge = False
        if flags & Connect.PCI_DEVICE:
            model = PciModel.PCI_BRIDGE
            # a pure PCIe guest has nothing a pci-bridge plugs into: QEMU 7.2 has
            # pcie-to-pci-bridge, which libvirt prefers over dmi-to-pci-bridge
            need_pcie_bridge = not any(b.flags & Connect.PCI_BRIDGE for b in self.buses)
            if need_pcie_bridge and add == 1:
                add += 1
                a = replace(a, bus=a.bus + 1)
        elif flags & (Connect.PCIE_DEVICE | Connect.PCIE_SWITCH_UPSTREAM_PORT):
            model = PciModel.PCIE_ROOT_PORT
        else:
            name = next((m for m, c in _MODEL_CONNECT.items()
                         if c and (c & _TYPES_MASK) & flags), None)
            raise self._fail(
                None, ADDRESS_EXHAUSTED,
                f"a PCI slot is needed to connect a PCI controller model='{name}', but none is "
                "available, and it cannot be automatically added" if name else
                f"Cannot automatically add a new PCI bus for a device with connect flags "
                f"{int(flags):02x}", "add the controller it plugs into, with an address",
            )
        new: list[_Bus] = []
        if need_pcie_bridge:
            port = _Bus.of(PciModel.PCIE_ROOT_PORT)
            port.flags = Connect.PCIE_TO_PCI_BRIDGE  # reserved for the bridge, not for hotplug
            new += [port, _Bus.of(PciModel.PCIE_TO_PCI_BRIDGE)]
        new += [_Bus.of(model) for _ in range(add - len(new))]
        self.buses += new
        return a

    def in_use(self, a: PciAddress) -> bool:
        return bool(self.buses[a.bus].functions[a.slot])

    def reserve(self, a: PciAddress, flags: Connect, dev: PciDevice | None,
                from_config: bool = True) -> PciAddress:
        if self.dry_run:
            a = self.grow(a, flags)
        self.validate(a, flags, from_config, dev)
        bus = self.buses[a.bus]
        if bus.functions[a.slot] & (1 << a.function):
            other = self.owner.get((a.bus, a.slot, a.function))
            held = f" (already used by {other})" if other else (
                " (a function of the machine's chipset)" if dev is not None else "")
            raise self._fail(dev, ADDRESS_CONFLICT,
                             f"Attempted double use of PCI Address {a}{held}",
                             "give each device its own slot or function, or remove <address>")
        if dev is not None:
            self.owner[(a.bus, a.slot, a.function)] = dev.where
        if not bus.functions[a.slot] and flags & Connect.AGGREGATE_SLOT:
            bus.aggregate[a.slot] = True
        bus.functions[a.slot] |= 1 << a.function
        return a

    def next_address(self, flags: Connect, function: int) -> PciAddress:
        """virDomainPCIAddressGetNextAddr (isolation groups are all 0 here)."""
        fn = 0 if function < 0 else function
        for index, bus in enumerate(self.buses):
            probe = PciAddress(bus=index, slot=bus.min_slot, function=fn)
            if not self.compatible(probe, bus.flags, flags, from_config=False, dev=None,
                                   report=False):
                continue
            slot = bus.min_slot
            while slot <= bus.max_slot:
                used = bus.functions[slot]
                if not used:
                    return PciAddress(bus=index, slot=slot, function=fn)
                if flags & Connect.AGGREGATE_SLOT and bus.aggregate[slot]:
                    if not used & (1 << fn):
                        return PciAddress(bus=index, slot=slot, function=fn)
                    if function < 0:
                        free = next((f for f in range(fn, 8) if not used & (1 << f)), None)
                        if free is not None:
                            return PciAddress(bus=index, slot=slot, function=free)
                        fn = 0
                slot += 1
        if self.dry_run:
            a = self.grow(PciAddress(bus=len(self.buses), function=fn), flags)
            return replace(a, slot=self.buses[a.bus].min_slot)
        raise self._fail(None, ADDRESS_EXHAUSTED, "No more available PCI slots",
                         "add a pci-bridge or pcie-root-port controller")

    def reserve_next(self, flags: Connect, function: int = -1) -> PciAddress:
        a = self.next_address(flags, function)
        return self.reserve(a, flags, None, from_config=False)


class _Assigner:
    def __init__(self, chip: Chipset | None, devices: Sequence[PciDevice], pcie: bool) -> None:
        self.chip = chip
        self.devices = list(devices)
        self.addr: dict[Hashable, PciAddress] = {
            d.key: d.address for d in devices if d.address is not None and not d.address.empty
        }
        self.pcie = pcie  # the root bus is pcie-root: "pcie" and "virtio" mean PCI Express

    def flags(self, d: PciDevice) -> Connect:
        return slot_flags(d.kind, self.pcie)

    def wanted(self, d: PciDevice) -> bool:
        return not d.skip and d.key not in self.addr

    def collect(self, s: _AddressSet) -> None:
        for d in self.devices:
            a = self.addr.get(d.key)
            if a is None:
                continue
            if (d.role is Role.IDE0 and (a.bus, a.slot, a.function) == (0, 1, 1)) or (
                d.role is Role.PIIX3_USB0 and (a.bus, a.slot, a.function) == (0, 1, 2)
            ):
                continue  # PIIX3's own functions: reserved with the chipset
            flags = self.flags(d) or Connect.PCI_DEVICE
            if isinstance(d.kind, PciModel) and d.kind.is_root:
                raise s._fail(d, ADDRESS_TYPE, f"a {d.kind} controller has no PCI address",
                              "remove <address> from the root controller")
            self.addr[d.key] = replace(a, bus=s.reserve(a, flags, d).bus)

    def chipset(self, s: _AddressSet) -> None:
        if self.chip is Chipset.I440FX:
            self._piix3(s)
        elif self.chip is Chipset.Q35:
            self._q35(s)

    def _fixed(self, s: _AddressSet, d: PciDevice, want: PciAddress, what: str,
               flags: Connect) -> None:
        have = self.addr.get(d.key)
        if have is not None and (have.domain, have.bus, have.slot, have.function) != (
            want.domain, want.bus, want.slot, want.function
        ):
            raise s._fail(d, ADDRESS_UNUSABLE, f"{what} must have PCI address "
                          f"0:0:{want.slot:x}.{want.function}",
                          f"write slot='0x{want.slot:02x}' function='0x{want.function}' "
                          "or remove <address>")
        if have is None:
            self.addr[d.key] = want
        if self.chip is Chipset.I440FX and s.buses:
            s.reserve(want, flags, d)

    def _piix3(self, s: _AddressSet) -> None:
        flags = Connect.AUTOASSIGN | Connect.PCI_DEVICE
        for d in self.devices:
            if d.role is Role.IDE0:
                self._fixed(s, d, PciAddress(slot=1, function=1), "Primary IDE controller", flags)
            elif d.role is Role.PIIX3_USB0:
                self._fixed(s, d, PciAddress(slot=1, function=2),
                            "PIIX3 USB controller at index 0", flags)
        if s.buses:
            if not any(d.role is Role.IDE0 for d in self.devices):
                # QEMU's pc has the PIIX3 IDE function whether or not the definition
                # names it (libvirt leaves 00:01.1 free then, and QEMU refuses to start)
                s.reserve(PciAddress(slot=1, function=1), flags, None)
            s.reserve(PciAddress(slot=1), flags, None)  # the ISA bridge
            s.reserve(PciAddress(slot=1, function=3), flags, None)  # ACPI / PM
        self._primary_video(s, 2, flags)

    def _primary_video(self, s: _AddressSet, slot: int, flags: Connect) -> None:
        video = next((d for d in self.devices if d.role is Role.PRIMARY_VIDEO), None)
        if video is None or not self.wanted(video):
            return
        want = PciAddress(slot=slot)
        s.validate(want, flags, True, video)
        if s.in_use(want):
            self._next(s, video)
        else:
            self.addr[video.key] = s.reserve(want, flags, video)

    def _q35(self, s: _AddressSet) -> None:
        flags = Connect.PCIE_DEVICE
        for d in self.devices:
            if d.role is Role.SATA0:
                self._fixed(s, d, PciAddress(slot=0x1F, function=2), "Primary SATA controller",
                            flags)
            elif d.role is Role.UHCI1 and d.address is None and d.key not in self.addr:
                # the first USB2 controllers go where real ICH9 has them, 1d then 1a
                for slot in (0x1D, 0x1A):
                    if not s.in_use(PciAddress(slot=slot)):
                        s.reserve(PciAddress(slot=slot), flags, d)
                        self.addr[d.key] = PciAddress(slot=slot, multifunction=True)
                        break
            elif (d.role is Role.DMI_BRIDGE and d.address is None and d.key not in self.addr
                  and not s.in_use(PciAddress(slot=0x1E))):
                self.addr[d.key] = s.reserve(PciAddress(slot=0x1E), flags, d)
        if s.buses:
            s.reserve(PciAddress(slot=0x1F, multifunction=True), flags, None)  # LPC/ISA
            s.reserve(PciAddress(slot=0x1F, function=3), flags, None)  # SMBus
        self._primary_video(s, 1, flags)
        if not s.in_use(PciAddress(slot=0x1B)):
            sound = next((d for d in self.devices
                          if d.role is Role.ICH9_SOUND and self.wanted(d)), None)
            if sound is not None:
                self.addr[sound.key] = s.reserve(PciAddress(slot=0x1B), flags, sound)

    def _next(self, s: _AddressSet, d: PciDevice, function: int = -1) -> PciAddress:
        a = s.reserve_next(self.flags(d), function)
        if not s.dry_run:
            self.addr[d.key] = a
        return a

    def slots(self, s: _AddressSet) -> None:
        """qemuDomainAssignDevicePCISlots: every device that still wants an address."""
        ordered = sorted(self.devices, key=lambda d: d.order)  # stable: keeps device order
        for d in ordered:
            if not self.wanted(d) or not self.flags(d):
                continue
            if isinstance(d.kind, PciModel) and d.kind.is_root:
                continue
            if d.role in _USB2_FUNCTION:
                self._usb2(s, d)
            else:
                self._next(s, d)

    def _usb2(self, s: _AddressSet, d: PciDevice) -> None:
        function, multi = _USB2_FUNCTION[d.role]
        mate = next((self.addr[o.key] for o in self.devices
                     if o.role in _USB2_FUNCTION and o.usb_index == d.usb_index
                     and o.key in self.addr), None)
        if mate is not None:
            a = PciAddress(mate.domain, mate.bus, mate.slot, function, multi)
            s.reserve(a, self.flags(d), d)
            self.addr[d.key] = a
        else:
            a = s.reserve_next(self.flags(d), function)
            if not s.dry_run:
                self.addr[d.key] = replace(a, multifunction=multi)

    def multifunction(self) -> None:
        """virDomainPCIAddressSetAllMulti: function 0 of a shared slot says multifunction."""
        shared = {(a.domain, a.bus, a.slot) for a in self.addr.values() if a.function}
        by_key = {d.key: d for d in self.devices}
        for key, a in self.addr.items():
            if a.function == 0 and a.multifunction is False and (
                    a.domain, a.bus, a.slot) in shared and key in by_key:
                # libvirt passes it on and QEMU refuses to start ("PCI: single function
                # device can't be populated in function N"; q35-multifunction in its tests)
                raise _AddressSet._fail(
                    by_key[key], ADDRESS_CONFLICT,
                    f"slot 0x{a.slot:02x} on bus 0x{a.bus:02x} has devices on other "
                    "functions, but its function 0 says multifunction='off'",
                    "set multifunction='on' on function 0 of that slot (or remove it), or "
                    "move the other functions to another slot",
                )
        for key, a in list(self.addr.items()):
            if a.function == 0 and a.multifunction is None and (a.domain, a.bus, a.slot) in shared:
                self.addr[key] = replace(a, multifunction=True)


def assign_pci(
    machine: str | None, buses: Sequence[PciBus], devices: Sequence[PciDevice]
) -> PciPlan:
    """libvirt's qemuDomainAssignPCIAddresses.

    `buses`: the PCI controllers of the definition (after the implicit root was added);
    `devices`: every device that may use PCI, PCI controllers included (order
    PCI_CONTROLLER, kind = their model), each family in definition order. Returns the
    address of every device that has or got one, and the controllers added on the way
    (pcie-root-ports on q35, pci-bridges on pc) in index order.
    """
    chip = chipset(machine)
    by_index = {b.index: b for b in buses}
    nbuses = max(by_index, default=-1) + 1
    root = by_index.get(0)
    work = _Assigner(chip, devices, root is not None and root.model is PciModel.PCIE_ROOT)
    added: list[AddedController] = []

    def address_set(n: int, dry: bool) -> _AddressSet:
        root_model = root.model if root is not None else PciModel.PCI_ROOT
        default = PciModel.PCIE_ROOT_PORT if root_model is PciModel.PCIE_ROOT else (
            PciModel.PCI_BRIDGE
        )
        lst = []
        for i in range(n):
            b = by_index.get(i)
            model = b.model if b is not None else (
                next((a.model for a in added if a.index == i), root_model if i == 0 else default)
            )
            lst.append(_Bus.of(model, b.hotplug if b is not None else True))
        s = _AddressSet(lst, dry)
        work.collect(s)
        return s

    if nbuses > 0:
        s = address_set(nbuses, True)
        work.chipset(s)
        if root is not None and root.model is PciModel.PCI_ROOT and not all(
            b.fully_reserved() for b in s.buses
        ):
            # one spare slot, so that a pci-bridge can still be plugged in later
            s.reserve_next(Connect.AUTOASSIGN | Connect.PCI_DEVICE)
        work.slots(s)
        if (nbuses - 1 <= 0 and len(s.buses) > nbuses and root is not None
                and root.model is PciModel.PCIE_ROOT):
            # a new q35 guest whose controllers libvirt adds gets one empty
            # pcie-root-port for hotplug
            s.reserve_next(Connect.AUTOASSIGN | Connect.PCIE_DEVICE)
        i = 1
        while i < len(s.buses):
            if i not in by_index:
                model = s.buses[i].model
                added.append(AddedController(i, model, None))
                if not model.is_root:
                    s.reserve_next(model.connect)
            i += 1
        nbuses = len(s.buses)
        for a in added:
            work.devices.append(PciDevice(
                key=("pci", a.index), order=Order.PCI_CONTROLLER, kind=a.model,
                where=f"/domain/devices/controller[@type='pci'][@index='{a.index}']",
            ))
    s = address_set(nbuses, False)
    if chip is not None:
        work.chipset(s)
        work.slots(s)
        work.multifunction()
    for d in work.devices:
        if d.kind is PciModel.PCI_BRIDGE and d.key in work.addr:
            idx = next((b.index for b in buses if ("pci", b.index) == d.key), None)
            at = work.addr[d.key]
            if idx is not None and idx <= at.bus:
                raise _AddressSet._fail(
                    d, ADDRESS_UNUSABLE, f"PCI controller at index {idx} (0x{idx:02x}) has "
                    f"bus='0x{at.bus:02x}', but index must be larger than bus",
                    "plug the pci-bridge into a bus with a lower index",
                )
    return PciPlan(
        addresses=dict(work.addr),
        added=tuple(replace(a, address=work.addr.get(("pci", a.index))) for a in added),
    )


def root_port_target(index: int, address: PciAddress) -> tuple[int, int]:
    """(chassis, port) libvirt gives a pcie-root-port that has none: the index, and
    (slot << 3) + function of its own address (0x10 for 00:02.0)."""
    return index, (address.slot << 3) + address.function


# --- virtio-serial -----------------------------------------------------------------------

DEFAULT_VIRTIO_SERIAL_PORTS = 31


@dataclass(frozen=True)
class SerialPort:
    """A virtio channel or console that needs a virtio-serial port."""

    key: Hashable
    address: VirtioSerialAddress | None
    console: bool = False  # virtio consoles may take port 0 (and keep no address)
    where: str = "/domain/devices"
    line: int | None = None


@dataclass(frozen=True)
class SerialPlan:
    addresses: dict[Hashable, VirtioSerialAddress]
    added_controllers: tuple[int, ...] = ()


def assign_virtio_serial(
    controllers: Sequence[tuple[int, int | None]], ports: Sequence[SerialPort]
) -> SerialPlan:
    """qemuDomainAssignVirtioSerialAddresses. `controllers`: (index, ports or None)."""
    maps: dict[int, list[bool]] = {
        idx: [False] * (n if n is not None else DEFAULT_VIRTIO_SERIAL_PORTS)
        for idx, n in sorted(controllers)
    }
    added: list[int] = []

    def fail(
        p: SerialPort, cause: str, fix: str, code: ErrorCode = ADDRESS_CONFLICT
    ) -> TapvirtError:
        return _AddressSet._fail(PciDevice(p.key, Order.SERIAL, Slot.PCI, where=p.where,
                                           line=p.line), code, cause, fix)

    def reserve(p: SerialPort, a: VirtioSerialAddress) -> None:
        m = maps.get(a.controller)
        if m is None:
            raise fail(p, f"virtio serial controller {a.controller} is missing",
                       f"add <controller type='virtio-serial' index='{a.controller}'/>",
                       ADDRESS_UNUSABLE)
        if a.port >= len(m):
            raise fail(p, f"virtio serial controller {a.controller} does not have port {a.port}",
                       f"use a port below {len(m)}, or raise the controller's ports=",
                       ADDRESS_UNUSABLE)
        if m[a.port]:
            raise fail(p, f"virtio serial port {a.port} on controller {a.controller} is already "
                       "occupied", "give each channel its own port, or remove <address>")
        m[a.port] = True

    out: dict[Hashable, VirtioSerialAddress] = {}
    for p in ports:
        if p.address is not None and p.address.port:
            reserve(p, p.address)
            out[p.key] = p.address
    # consoles first, then channels, each in definition order (libvirt's loops)
    for p in sorted(ports, key=lambda q: not q.console):
        if p.address is not None and p.address.port:
            continue
        start = 0 if p.console else 1
        if p.address is not None:  # controller given, port not: a port on that controller
            m = maps.get(p.address.controller)
            if m is None:
                raise fail(p, f"virtio-serial controller {p.address.controller} not available",
                           f"add <controller type='virtio-serial' "
                           f"index='{p.address.controller}'/>", ADDRESS_UNUSABLE)
            port = next((i for i in range(1, len(m)) if not m[i]), None)
            if port is None:
                raise fail(p, "Unable to find a free port on virtio-serial controller "
                           f"{p.address.controller}", "add another virtio-serial controller",
                           ADDRESS_EXHAUSTED)
            a = VirtioSerialAddress(p.address.controller, 0, port)
        else:
            found = next(((idx, i) for idx, m in maps.items()
                          for i in range(start, len(m)) if not m[i]), None)
            if found is None:
                idx = next(i for i in range(len(maps) + 1) if i not in maps)
                maps[idx] = [False] * DEFAULT_VIRTIO_SERIAL_PORTS
                maps = dict(sorted(maps.items()))
                added.append(idx)
                found = (idx, start)
            a = VirtioSerialAddress(found[0], 0, found[1])
        reserve(p, a)
        if not p.console:  # libvirt reserves a console's port but does not store it
            out[p.key] = a
    return SerialPlan(out, tuple(added))


# --- USB -------------------------------------------------------------------------------

USB_PORTS = {
    "piix3-uhci": 2, "piix4-uhci": 2, "vt82c686b-uhci": 2, "ich9-ehci1": 6, "ehci": 6,
    "ich9-uhci1": 0, "ich9-uhci2": 0, "ich9-uhci3": 0, "pci-ohci": 3, "nec-xhci": 4,
    "qemu-xhci": 4, "none": 0,
}


USB_HUB_PORTS = 8  # libvirt's VIR_DOMAIN_USB_HUB_PORTS: QEMU's usb-hub has 8


@dataclass(frozen=True)
class UsbDevice:
    key: Hashable
    address: UsbAddress | None
    where: str = "/domain/devices"
    line: int | None = None


@dataclass(frozen=True)
class UsbPlan:
    """The USB ports of the devices and hubs (by key), and the addresses of the hubs
    libvirt adds when the controllers have fewer ports than there are devices."""

    addresses: dict[Hashable, UsbAddress]
    added_hubs: tuple[UsbAddress, ...] = ()


@dataclass
class _UsbHub:
    """virDomainUSBAddressHub: a controller's root ports or a hub's, which are taken, and
    the hubs plugged into them."""

    used: list[bool]
    hubs: dict[int, _UsbHub] = field(default_factory=dict)  # port index -> hub

    @classmethod
    def of(cls, ports: int) -> _UsbHub:
        return cls([False] * ports)

    def free_port(self, level: int = 0) -> tuple[int, ...] | None:
        """virDomainUSBAddressFindFreePort: this hub's first free port, else (depth first)
        one on a hub plugged into it, at most 4 levels down."""
        if False in self.used:
            return (self.used.index(False) + 1,)
        if level >= USB_MAX_PORT_DEPTH - 1:
            return None
        for i in sorted(self.hubs):
            if (below := self.hubs[i].free_port(level + 1)) is not None:
                return (i + 1, *below)
        return None


def _usb_fail(d: UsbDevice, code: ErrorCode, cause: str, fix: str) -> TapvirtError:
    return TapvirtError(code, d.where, cause, fix, line=d.line)


def _usb_port(buses: dict[int, _UsbHub], d: UsbDevice, a: UsbAddress) -> tuple[_UsbHub, int]:
    """virDomainUSBAddressFindPort: the hub (or root ports) a port path ends on, and the
    index of the port on it; libvirt's messages for what is not there."""
    hub = buses.get(a.bus)
    if hub is None:
        raise _usb_fail(d, ADDRESS_UNUSABLE, f"Missing USB bus {a.bus}",
                        f"add <controller type='usb' index='{a.bus}'/> or use bus='0'")
    for port in a.port[:-1]:
        if port > len(hub.used):
            raise _usb_fail(d, ADDRESS_UNUSABLE, f"port {port} out of range in USB address "
                            f"bus: {a.bus} port: {a.port_text}",
                            f"use a port in 1..{len(hub.used)} at that level")
        below = hub.hubs.get(port - 1)
        if below is None:
            raise _usb_fail(d, ADDRESS_UNUSABLE, f"there is no hub at port {port} in USB "
                            f"address bus: {a.bus} port: {a.port_text}",
                            "add <hub type='usb'> with that port, or use a port directly "
                            "on the controller")
        hub = below
    if a.port[-1] > len(hub.used):
        raise _usb_fail(d, ADDRESS_UNUSABLE,
                        f"requested USB port {a.port_text} not present on USB bus {a.bus}",
                        f"use a port in 1..{len(hub.used)} there, or more ports on the "
                        "controller, or a <hub type='usb'>")
    return hub, a.port[-1] - 1


def assign_usb(
    controllers: Sequence[tuple[int, str, int | None]], devices: Sequence[UsbDevice],
    hubs: Sequence[UsbDevice] = (),
) -> UsbPlan:
    """qemuDomainAssignUSBAddresses for a new definition. `controllers`: (index, model,
    ports=); `hubs`: the `<hub type='usb'>` devices; `devices`: the other USB devices in
    virDomainUSBDeviceDefForeach's order. The steps are libvirt's: add hubs when there are
    more devices than ports (each hub takes one and gives 8), plug the hubs with a port
    path in (in document order: a hub on a hub comes after it), reserve the other given
    ports, then give the hubs without a port the first free ones, then the devices."""
    buses: dict[int, _UsbHub] = {}
    for idx, model, ports in controllers:
        n = ports if ports is not None and model in ("nec-xhci", "qemu-xhci") else (
            USB_PORTS.get(model, 0)
        )
        if n:
            buses[idx] = _UsbHub.of(n)
    if (hubs or devices) and not buses:
        if hubs:
            raise _usb_fail(hubs[0], ADDRESS_UNUSABLE,
                            "Can't add USB hub: USB is disabled for this domain",
                            "remove <controller type='usb' model='none'/> or the <hub>")
        raise _usb_fail(devices[0], ADDRESS_UNUSABLE,
                        "USB is disabled for this domain, but USB devices are present in the "
                        "domain XML", "add <controller type='usb' model='qemu-xhci'/> or "
                        "remove the USB devices")
    count = len(hubs) + len(devices)
    available = sum(len(b.used) for b in buses.values()) + USB_HUB_PORTS * len(hubs)
    needed = 0
    if count > available:  # qemuDomainUSBAddressAddHubs
        needed = -(-(count - available + 1) // (USB_HUB_PORTS - 1))
    added = [UsbDevice(("added hub", i), None) for i in range(needed)]
    out: dict[Hashable, UsbAddress] = {}

    def given(d: UsbDevice) -> UsbAddress | None:
        return d.address if d.address is not None and d.address.port else None

    for h in hubs:  # virDomainUSBAddressSetAddControllers: hubs with a port path
        if (a := given(h)) is None:
            continue
        target, i = _usb_port(buses, h, a)
        if i in target.hubs:
            raise _usb_fail(h, ADDRESS_CONFLICT, f"Duplicate USB hub on bus {a.bus} port "
                            f"{a.port_text}", "give each hub its own port")
        target.used[i] = True
        target.hubs[i] = _UsbHub.of(USB_HUB_PORTS)
        out[h.key] = a
    for d in devices:  # virDomainUSBAddressReserve
        if (a := given(d)) is None:
            continue
        target, i = _usb_port(buses, d, a)
        if target.used[i]:
            raise _usb_fail(d, ADDRESS_CONFLICT, f"Duplicate USB address bus {a.bus} port "
                            f"{a.port_text}", "give each USB device its own port")
        target.used[i] = True
        out[d.key] = a

    def assign(d: UsbDevice) -> tuple[_UsbHub, int]:  # virDomainUSBAddressAssign
        if d.address is not None and d.address.bus not in buses:
            raise _usb_fail(d, ADDRESS_UNUSABLE, f"USB bus {d.address.bus} requested but "
                            "no controller with that index is present",
                            f"add <controller type='usb' index='{d.address.bus}'/>")
        order = [d.address.bus] if d.address is not None else sorted(buses)
        for bus in order:
            if (port := buses[bus].free_port()) is not None:
                a = UsbAddress(bus, port)
                target, i = _usb_port(buses, d, a)
                target.used[i] = True
                out[d.key] = a
                return target, i
        raise _usb_fail(d, ADDRESS_EXHAUSTED, "No free USB ports",
                        "add a <hub type='usb'/>, or use <controller type='usb' "
                        "model='qemu-xhci' ports='15'/>")

    for h in (*hubs, *added):  # qemuDomainAssignUSBHubs
        if given(h) is None:
            target, i = assign(h)
            target.hubs[i] = _UsbHub.of(USB_HUB_PORTS)
    for d in devices:  # qemuDomainAssignUSBPorts
        if d.key not in out:
            assign(d)
    return UsbPlan(out, tuple(out.pop(h.key) for h in added))
