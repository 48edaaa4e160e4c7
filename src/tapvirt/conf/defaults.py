"""libvirt's defaults and implicit devices, in one post-parse step (libvirt's
qemuDomainDefPostParse / qemuDomainAssignAddresses): applied after every element is parsed
and checked, before the definition is stored, so `dumpxml` shows what the guest gets.

Each step is a pure `Domain -> Domain` function; `STEPS` runs in order. A step says why
libvirt does it. Defaults that belong to one attribute (e.g. the NIC model) stay beside
the element in its family module; what depends on the whole domain (implicit devices,
addresses, names) is here.

The steps follow libvirt 9.0's order for x86 with QEMU 7.2: the machine's own controllers
(USB, q35's SATA, the PCI root) -> per-controller default models -> drive addresses from
target names -> the controllers those addresses need -> PCI slots (adding pcie-root-ports or
pci-bridges), USB ports -> names. Since the result is stored at define time, a guest keeps
its hardware (and its NIC names, enp1s0) across starts, as with libvirt.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from dataclasses import replace
from typing import TYPE_CHECKING, Any, TypeVar

from tapvirt.conf import addresses as A
from tapvirt.conf.devices.controller import (
    PCI_MODEL_NAMES,
    Controller,
    ControllerType,
    PciTarget,
    ScsiModel,
    UsbModel,
    VirtioSerialModel,
    controller_alias,
    insert_controller,
)
from tapvirt.conf.devices.disk import Disk, DiskBus, auto_alias
from tapvirt.conf.devices.interface import Interface, NicModel
from tapvirt.conf.devices.virtio import VIRTIO_IOMMU_TRANSITIONAL
from tapvirt.conf.model import BootDev
from tapvirt.errors import TapvirtError

if TYPE_CHECKING:
    from tapvirt.conf.model import Domain

__all__ = ["STEPS", "apply_defaults"]

_X86 = (None, "x86_64", "i686")


def _chipset(dom: Domain) -> A.Chipset | None:
    if dom.os.arch not in _X86:
        return None
    return A.chipset(dom.os.machine)


def _with_controllers(dom: Domain, ctls: list[Controller]) -> Domain:
    return replace(dom, devices=replace(dom.devices, controllers=tuple(ctls)))


def _add(ctls: list[Controller], new: Controller) -> None:
    """A controller libvirt adds, placed as its parser would place it (so the stored XML
    reads back in the same order)."""
    insert_controller(ctls, new)


def _has(ctls: list[Controller], ctype: ControllerType, index: int) -> bool:
    return any(c.type is ctype and c.index == index for c in ctls)


def machine_controllers(dom: Domain) -> Domain:
    """qemuDomainDefAddDefaultDevices: what the machine has whether asked or not: a USB
    controller 0 (pc: PIIX3's UHCI; q35: qemu-xhci, libvirt's choice when QEMU has it),
    q35's SATA controller 0 (the ICH9 AHCI at 00:1f.2, always there) and the PCI root
    (pci-root on pc, pcie-root on q35). `<controller type='usb' model='none'/>` keeps USB
    off. A wrong root model is refused with libvirt's message."""
    chip = _chipset(dom)
    if chip is None:
        return dom
    ctls = list(dom.devices.controllers)
    q35 = chip is A.Chipset.Q35
    if not _has(ctls, ControllerType.USB, 0):
        model = UsbModel.QEMU_XHCI if q35 else None  # None: the UHCI default below
        _add(ctls, Controller(ControllerType.USB, 0, model))
    if q35 and not _has(ctls, ControllerType.SATA, 0):
        _add(ctls, Controller(ControllerType.SATA, 0))
    want = A.PciModel.PCIE_ROOT if q35 else A.PciModel.PCI_ROOT
    root = next((c for c in ctls if c.type is ControllerType.PCI and c.index == 0), None)
    if root is None:
        _add(ctls, Controller(ControllerType.PCI, 0, want))
    elif root.model is not want:
        raise TapvirtError(
            A.ADDRESS_UNUSABLE, "/domain/devices/controller[@type='pci'][@index='0']",
            f"The PCI controller with index='0' must be model='{want}' for this machine "
            f"type, but model='{root.model or 'none'}' was found instead",
            f"write <controller type='pci' index='0' model='{want}'/> or remove it",
        )
    return _with_controllers(dom, ctls)


def controller_models(dom: Domain) -> Domain:
    """qemuDomainControllerDefPostParse: a USB controller without model is PIIX3's UHCI
    (libvirt's default on x86, also on q35 when asked for explicitly), a SCSI controller
    without model the LSI 53C895A (libvirt picks lsilogic first when QEMU has it)."""
    ctls = [
        replace(c, model=UsbModel.PIIX3_UHCI) if c.type is ControllerType.USB and c.model is None
        else replace(c, model=ScsiModel.LSILOGIC)
        if c.type is ControllerType.SCSI and c.model is None else c
        for c in dom.devices.controllers
    ]
    return _with_controllers(dom, ctls)


_DRIVE_BUS = {DiskBus.IDE: A.DriveBus.IDE, DiskBus.SATA: A.DriveBus.SATA,
              DiskBus.SCSI: A.DriveBus.SCSI, DiskBus.FDC: A.DriveBus.FDC}
_DISK_CONTROLLER = {DiskBus.SCSI: ControllerType.SCSI, DiskBus.FDC: ControllerType.FDC,
                    DiskBus.IDE: ControllerType.IDE, DiskBus.SATA: ControllerType.SATA}


# What QEMU's buses really have (libvirt accepts more and QEMU then refuses to start:
# disk-ide-split in libvirt's own tests): an IDE controller has 2 buses of 2 units, the
# ICH9 AHCI 6 ports on bus 0, a floppy controller 2 drives.
_DRIVE_LIMITS = {DiskBus.IDE: (2, 2), DiskBus.SATA: (1, 6), DiskBus.FDC: (1, 2)}


def _check_drive_range(n: int, d: Disk, a: A.DriveAddress) -> None:
    limits = _DRIVE_LIMITS.get(d.target_bus)
    if limits is None:
        return
    buses, units = limits
    if a.bus < buses and a.unit < units and a.target == 0:
        return
    raise TapvirtError(
        A.ADDRESS_INVALID, f"/domain/devices/disk[{n + 1}]/address",
        f"disk '{d.target_dev}': drive address bus='{a.bus}' target='{a.target}' "
        f"unit='{a.unit}' does not exist on a {d.target_bus} controller ({buses} "
        f"bus{'es' if buses > 1 else ''} of {units} units, target 0); QEMU would refuse "
        "to start",
        f"use bus 0..{buses - 1}, target='0' and unit 0..{units - 1}, or remove <address> "
        "so the target name chooses it",
    )


def drive_addresses(dom: Domain) -> Domain:
    """virDomainDiskDefAssignAddress, then virDomainDefAddImplicitControllers: a disk on a
    controller bus without <address> gets the one its target name implies (sdb on sata:
    controller 0 unit 1; hdc: controller 0 bus 1 unit 0; sdh on scsi: controller 1), and
    every controller index up to the highest one used is added if missing."""
    disks = [
        replace(d, address=A.drive_address(_DRIVE_BUS[d.target_bus], d.target_dev))
        if d.address is None and d.target_bus in _DRIVE_BUS else d
        for d in dom.devices.disks
    ]
    seen: dict[tuple[DiskBus, A.DriveAddress], Disk] = {}
    for n, d in enumerate(disks):
        if isinstance(d.address, A.DriveAddress):
            _check_drive_range(n, d, d.address)
            other = seen.setdefault((d.target_bus, d.address), d)
            if other is not d:
                a = d.address
                raise TapvirtError(
                    A.ADDRESS_CONFLICT, f"/domain/devices/disk[{n + 1}]",
                    f"Found duplicate drive address for disk with target name "
                    f"'{d.target_dev}' controller='{a.controller}' bus='{a.bus}' "
                    f"target='{a.target}' unit='{a.unit}'",
                    f"it is the address of disk '{other.target_dev}': give one of them "
                    "another unit, or remove <address>",
                )
    ctls = list(dom.devices.controllers)
    for bus, ctype in _DISK_CONTROLLER.items():
        used = [d.address.controller for d in disks
                if d.target_bus is bus and isinstance(d.address, A.DriveAddress)]
        for index in range(max(used, default=-1) + 1):
            if not _has(ctls, ctype, index):
                model = ScsiModel.LSILOGIC if ctype is ControllerType.SCSI else None
                _add(ctls, Controller(ctype, index, model))
    chip = _chipset(dom)
    for c in ctls:
        if c.type is ControllerType.IDE and chip is A.Chipset.Q35:
            raise TapvirtError(
                A.ADDRESS_UNUSABLE, _where(c),
                "IDE controllers are unsupported for this QEMU binary or machine type",
                "remove the IDE controller; q35 has SATA (AHCI): use <target bus='sata'/>",
            )
    for n, d in enumerate(disks):
        if d.target_bus is DiskBus.IDE and chip is A.Chipset.Q35:
            raise TapvirtError(
                A.ADDRESS_UNUSABLE, f"/domain/devices/disk[{n + 1}]",
                "IDE controllers are unsupported for this QEMU binary or machine type",
                "use <target bus='sata'/> (q35 has an AHCI controller) or machine='pc'",
            )
    return replace(dom, devices=replace(dom.devices, disks=tuple(disks),
                                        controllers=tuple(ctls)))


def virtio_serial_addresses(dom: Domain) -> Domain:
    """virDomainDefAddImplicitControllers + qemuDomainAssignVirtioSerialAddresses: virtio
    channels (and virtio consoles) need a virtio-serial controller, added as index 0 when
    the definition has none; every channel without a port gets the next free one
    (ports from 1; a virtio console takes port 0 and keeps no address)."""
    d = dom.devices
    consoles = [c for c in d.consoles if getattr(c, "virtio", False)]
    if not d.channels and not consoles:
        return dom
    dev = "/domain/devices"
    ports = [A.SerialPort(("console", n), None, console=True, where=f"{dev}/console")
             for n, _ in enumerate(consoles)]
    ports += [A.SerialPort(("channel", n), c.address, where=f"{dev}/channel[{n + 1}]")
              for n, c in enumerate(d.channels)]
    ctls = list(d.controllers)
    # virDomainDefMaybeAddVirtioSerialController: the controller a channel names (0 if none)
    for idx in sorted({c.address.controller if c.address is not None else 0
                       for c in d.channels} | ({0} if consoles else set())):
        if not _has(ctls, ControllerType.VIRTIO_SERIAL, idx):
            _add(ctls, Controller(ControllerType.VIRTIO_SERIAL, idx))
    have = [(c.index, c.ports) for c in ctls if c.type is ControllerType.VIRTIO_SERIAL]
    plan = A.assign_virtio_serial(have, ports)
    for idx in plan.added_controllers:
        _add(ctls, Controller(ControllerType.VIRTIO_SERIAL, idx))
    channels = tuple(replace(c, address=plan.addresses.get(("channel", n), c.address))
                     for n, c in enumerate(d.channels))
    return replace(dom, devices=replace(d, channels=channels, controllers=tuple(ctls)))


def _controller_slot(c: Controller) -> A.Slot | A.PciModel | None:
    """What kind of PCI slot a controller needs (libvirt's
    qemuDomainDeviceCalculatePCIConnectFlags); None: it is not on PCI."""
    if c.type is ControllerType.PCI:
        return c.pci_model
    if c.type is ControllerType.USB:
        if c.model is UsbModel.NONE:
            return None
        return A.Slot.PCIE if isinstance(c.model, UsbModel) and c.model.xhci else A.Slot.PCI
    if c.type is ControllerType.SCSI:
        virtio = c.model in (ScsiModel.VIRTIO_SCSI, ScsiModel.VIRTIO_NON_TRANSITIONAL)
        return A.Slot.VIRTIO if virtio else A.Slot.PCI
    if c.type is ControllerType.VIRTIO_SERIAL:
        return A.Slot.PCI if c.model is VirtioSerialModel.VIRTIO_TRANSITIONAL else A.Slot.VIRTIO
    if c.type in (ControllerType.SATA, ControllerType.IDE):
        return A.Slot.PCI
    return None  # fdc sits behind the ISA bridge, ccid on USB


_USB2_ROLES = {UsbModel.ICH9_EHCI1: A.Role.EHCI1, UsbModel.ICH9_UHCI1: A.Role.UHCI1,
               UsbModel.ICH9_UHCI2: A.Role.UHCI2, UsbModel.ICH9_UHCI3: A.Role.UHCI3}


def _controller_role(c: Controller) -> A.Role:
    if c.type is ControllerType.IDE and c.index == 0:
        return A.Role.IDE0
    if c.type is ControllerType.SATA and c.index == 0:
        return A.Role.SATA0
    if c.type is ControllerType.USB and isinstance(c.model, UsbModel):
        if c.index == 0 and c.model is UsbModel.PIIX3_UHCI:
            return A.Role.PIIX3_USB0
        return _USB2_ROLES.get(c.model, A.Role.NONE)
    if c.pci_model is A.PciModel.DMI_TO_PCI_BRIDGE:
        return A.Role.DMI_BRIDGE
    return A.Role.NONE


def _where(c: Controller) -> str:
    return f"/domain/devices/controller[@type='{c.type}'][@index='{c.index}']"


def _ctl_key(n: int, c: Controller) -> Hashable:
    return ("pci", c.index) if c.type is ControllerType.PCI else ("controller", n)


def _nic_slot(model: NicModel) -> A.Slot:
    if model is NicModel.VIRTIO:
        return A.Slot.VIRTIO
    return A.Slot.PCIE if model is NicModel.E1000E else A.Slot.PCI


def pci_addresses(dom: Domain) -> Domain:
    """qemuDomainAssignPCIAddresses (tapvirt.conf.addresses.assign_pci): a slot for every
    PCI device without one, the pcie-root-ports / bridges that takes, and libvirt's
    defaults for every PCI controller (QEMU device name, chassis and port)."""
    chip = _chipset(dom)
    if chip is None:
        return dom
    d = dom.devices
    items: list[A.PciDevice] = []
    for n, c in enumerate(d.controllers):
        kind = _controller_slot(c)
        if kind is None:
            continue
        addr = c.address if isinstance(c.address, A.PciAddress) else None
        items.append(A.PciDevice(
            key=_ctl_key(n, c), kind=kind, address=addr, where=_where(c),
            order=A.Order.PCI_CONTROLLER if c.type is ControllerType.PCI
            else A.Order.CONTROLLER,
            role=_controller_role(c), usb_index=c.index,
            # libvirt places IDE 0 with the chipset only; a non-PCI address opts out
            skip=(c.type is ControllerType.IDE and c.index == 0 and chip is not A.Chipset.I440FX)
            or (c.address is not None and addr is None),
        ))
    for n, iface in enumerate(d.interfaces):
        items.append(A.PciDevice(("interface", n), A.Order.NET, _nic_slot(iface.model),
                                 iface.address, f"/domain/devices/interface[{n + 1}]"))
    for n, disk in enumerate(d.disks):
        if disk.target_bus is DiskBus.VIRTIO:
            addr = disk.address if isinstance(disk.address, A.PciAddress) else None
            items.append(A.PciDevice(("disk", n), A.Order.DISK, A.Slot.VIRTIO, addr,
                                     f"/domain/devices/disk[{n + 1}]"))
    items += _peripheral_pci(dom, chip)
    buses = [A.PciBus(c.index, c.pci_model, hotplug=not (c.target and c.target.hotplug is False))
             for c in d.controllers if c.pci_model is not None]
    plan = A.assign_pci(dom.os.machine, buses, items)
    got = plan.addresses
    ctls = [
        replace(c, address=got.get(_ctl_key(n, c), c.address))
        for n, c in enumerate(d.controllers)
    ]
    for added in plan.added:
        _add(ctls, Controller(ControllerType.PCI, added.index, added.model,
                              address=added.address))
    ctls = [_pci_controller_defaults(c) for c in ctls]
    ifaces = tuple(replace(i, address=got.get(("interface", n), i.address))
                   for n, i in enumerate(d.interfaces))
    disks = tuple(replace(k, address=got.get(("disk", n), k.address))
                  for n, k in enumerate(d.disks))
    return replace(dom, devices=replace(d, controllers=tuple(ctls), interfaces=ifaces,
                                        disks=disks, **_peripheral_got(d, got)))


def _pci_of(addr: object) -> A.PciAddress | None:
    return addr if isinstance(addr, A.PciAddress) else None


def _peripheral_pci(dom: Domain, chip: A.Chipset) -> list[A.PciDevice]:
    """The other PCI devices, with the kind of slot libvirt gives each
    (qemuDomainDeviceCalculatePCIConnectFlags): transitional virtio models want
    conventional PCI, the others virtio slots; sound cards, i6300esb, VGA/cirrus/qxl/vmvga
    conventional PCI, bochs PCI Express; the first video card is the chipset's primary."""
    from tapvirt.conf.devices.graphics import VideoModel
    from tapvirt.conf.devices.input import InputBus
    from tapvirt.conf.devices.iommu import IommuModel
    from tapvirt.conf.devices.misc import BalloonModel, RngModel, WatchdogModel
    from tapvirt.conf.devices.sound import SoundModel

    d = dom.devices
    out: list[A.PciDevice] = []
    dev = "/domain/devices"
    for n, snd in enumerate(d.sounds):
        if snd.model not in (SoundModel.SB16, SoundModel.USB):
            out.append(A.PciDevice(
                ("sound", n), A.Order.SOUND, A.Slot.PCI, _pci_of(snd.address),
                f"{dev}/sound[{n + 1}]",
                role=A.Role.ICH9_SOUND if snd.model is SoundModel.ICH9 else A.Role.NONE,
            ))
    b = d.memballoon
    if b is not None and b.model is not BalloonModel.NONE:
        kind = A.Slot.PCI if b.model is BalloonModel.VIRTIO_TRANSITIONAL else A.Slot.VIRTIO
        out.append(A.PciDevice(("memballoon", 0), A.Order.MEMBALLOON, kind,
                               _pci_of(b.address), f"{dev}/memballoon"))
    for n, r in enumerate(d.rngs):
        kind = A.Slot.PCI if r.model is RngModel.VIRTIO_TRANSITIONAL else A.Slot.VIRTIO
        out.append(A.PciDevice(("rng", n), A.Order.RNG, kind, _pci_of(r.address),
                               f"{dev}/rng[{n + 1}]"))
    w = d.watchdog
    if w is not None and w.model is WatchdogModel.I6300ESB:
        out.append(A.PciDevice(("watchdog", 0), A.Order.WATCHDOG, A.Slot.PCI,
                               _pci_of(w.address), f"{dev}/watchdog"))
    for n, v in enumerate(d.videos):
        if v.model in (VideoModel.NONE, VideoModel.RAMFB):
            continue
        kind = (A.Slot.VIRTIO if v.model is VideoModel.VIRTIO else
                A.Slot.PCIE if v.model is VideoModel.BOCHS else A.Slot.PCI)
        out.append(A.PciDevice(("video", n), A.Order.VIDEO, kind, _pci_of(v.address),
                               f"{dev}/video[{n + 1}]",
                               role=A.Role.PRIMARY_VIDEO if n == 0 else A.Role.NONE))
    for n, i in enumerate(d.inputs):
        if i.bus is InputBus.VIRTIO:
            out.append(A.PciDevice(("input", n), A.Order.INPUT, A.Slot.VIRTIO,
                                   _pci_of(i.address), f"{dev}/input[{n + 1}]"))
    if d.iommu is not None and d.iommu.model is IommuModel.VIRTIO:
        out.append(A.PciDevice(("iommu", 0), A.Order.IOMMU, A.Slot.VIRTIO_INTEGRATED,
                               _pci_of(d.iommu.address), f"{dev}/iommu"))
    for n, m in enumerate(d.memories):
        if not m.on_slot:  # virtio-mem-pci
            out.append(A.PciDevice(("memory", n), A.Order.MEMORY, A.Slot.VIRTIO,
                                   _pci_of(m.address), f"{dev}/memory[{n + 1}]"))
    return out


def _peripheral_got(d: Any, got: dict[Hashable, A.PciAddress]) -> dict[str, Any]:
    """The `Devices` fields of these families with the addresses assigned."""
    def each(items: tuple[_T, ...], family: str) -> tuple[_T, ...]:
        return tuple(replace(x, address=got[(family, n)]) if (family, n) in got else x
                     for n, x in enumerate(items))

    out: dict[str, Any] = {
        "sounds": each(d.sounds, "sound"), "rngs": each(d.rngs, "rng"),
        "videos": each(d.videos, "video"), "inputs": each(d.inputs, "input"),
        "memories": each(d.memories, "memory"),
    }
    if d.memballoon is not None and ("memballoon", 0) in got:
        out["memballoon"] = replace(d.memballoon, address=got[("memballoon", 0)])
    if d.watchdog is not None and ("watchdog", 0) in got:
        out["watchdog"] = replace(d.watchdog, address=got[("watchdog", 0)])
    if d.iommu is not None and ("iommu", 0) in got:
        out["iommu"] = replace(d.iommu, address=got[("iommu", 0)])
    return out


def _pci_controller_defaults(c: Controller) -> Controller:
    """qemuDomainPCIControllerSetDefaultModelName and the chassis/port defaults."""
    model = c.pci_model
    if model is None or model.is_root:
        return c
    name = c.model_name or (PCI_MODEL_NAMES[model] or (None,))[0]
    target = c.target or PciTarget()
    if model is A.PciModel.PCI_BRIDGE and target.chassis_nr is None:
        target = replace(target, chassis_nr=c.index)
    if model in (A.PciModel.PCIE_ROOT_PORT, A.PciModel.PCIE_SWITCH_DOWNSTREAM_PORT) and (
        isinstance(c.address, A.PciAddress)
    ):
        if target.chassis is None:
            target = replace(target, chassis=c.index)
        if target.port is None:
            port = (A.root_port_target(c.index, c.address)[1]
                    if model is A.PciModel.PCIE_ROOT_PORT else c.address.slot)
            target = replace(target, port=port)
    return replace(c, model_name=name, target=target if target != PciTarget() else None)


def usb_addresses(dom: Domain) -> Domain:
    """qemuDomainAssignUSBAddresses: a port for every USB device and hub, and the hubs
    libvirt adds when the controllers have too few ports (written into the definition)."""
    from tapvirt.conf.devices.hub import Hub

    d = dom.devices
    items: list[A.UsbDevice] = []
    for n, disk in enumerate(d.disks):
        if disk.target_bus is DiskBus.USB:
            addr = disk.address if isinstance(disk.address, A.UsbAddress) else None
            items.append(A.UsbDevice(("disk", n), addr, f"/domain/devices/disk[{n + 1}]"))
    for n, c in enumerate(d.controllers):
        if c.type is ControllerType.CCID:
            addr = c.address if isinstance(c.address, A.UsbAddress) else None
            items.append(A.UsbDevice(("controller", n), addr, _where(c)))
    items += _peripheral_usb(d)
    hubs = [A.UsbDevice(("hub", n), h.address, f"/domain/devices/hub[{n + 1}]")
            for n, h in enumerate(d.hubs)]
    if not items and not hubs:
        return dom
    usb = [(c.index, str(c.model), c.ports) for c in d.controllers
           if c.type is ControllerType.USB and c.model is not None]
    plan = A.assign_usb(usb, items, hubs)
    got = plan.addresses
    disks = tuple(replace(k, address=got.get(("disk", n), k.address))
                  for n, k in enumerate(d.disks))
    ctls = tuple(replace(c, address=got.get(("controller", n), c.address))
                 for n, c in enumerate(d.controllers))

    def each(items: tuple[_T, ...], family: str) -> tuple[_T, ...]:
        return tuple(replace(x, address=got[(family, n)]) if (family, n) in got else x
                     for n, x in enumerate(items))

    return replace(dom, devices=replace(
        d, disks=disks, controllers=ctls, inputs=each(d.inputs, "input"),
        sounds=each(d.sounds, "sound"), redirdevs=each(d.redirdevs, "redirdev"),
        hubs=(*each(d.hubs, "hub"), *(Hub(address=a) for a in plan.added_hubs)),
    ))


def _peripheral_usb(d: Any) -> list[A.UsbDevice]:
    """USB inputs, usb-audio and USB redirection, in virDomainUSBDeviceDefForeach's
    order (after disks and CCID controllers)."""
    from tapvirt.conf.devices.input import InputBus
    from tapvirt.conf.devices.sound import SoundModel

    def usb(addr: object) -> A.UsbAddress | None:
        return addr if isinstance(addr, A.UsbAddress) else None

    dev = "/domain/devices"
    out = [A.UsbDevice(("input", n), usb(i.address), f"{dev}/input[{n + 1}]")
           for n, i in enumerate(d.inputs) if i.bus is InputBus.USB]
    out += [A.UsbDevice(("sound", n), usb(x.address), f"{dev}/sound[{n + 1}]")
            for n, x in enumerate(d.sounds) if x.model is SoundModel.USB]
    out += [A.UsbDevice(("redirdev", n), usb(x.address), f"{dev}/redirdev[{n + 1}]")
            for n, x in enumerate(d.redirdevs)]
    return out
_T = TypeVar("_T", bound=Any)


def _net_alias_index(alias: str | None) -> int | None:
    """N of an alias `netN` (libvirt's qemuDomainDeviceAliasIndex), else None."""
    digits = alias[3:] if alias is not None and alias.startswith("net") else ""
    return int(digits) if digits.isascii() and digits.isdigit() else None


def _interface_aliases(ifaces: tuple[Interface, ...]) -> tuple[Interface, ...]:
    """Each NIC without an alias gets `net<highest netN of all NICs + 1>`, in document
    order (libvirt 9.0's qemuAssignDeviceNetAlias with idx -1): [none, ua-x, none] gives
    net0, ua-x, net1, where numbering by position would give net2."""
    out = list(ifaces)
    for n, iface in enumerate(out):
        if iface.alias is None:
            used = [i for i in map(_net_alias_index, (x.alias for x in out)) if i is not None]
            out[n] = replace(iface, alias=f"net{max(used, default=-1) + 1}")
    return tuple(out)


def assign_aliases(dom: Domain) -> Domain:
    """Every device gets its stable name (libvirt's qemuAssignDeviceAliases): disks by bus
    and address (virtio-disk0, ide0-1-0, sata0-0-0, scsi0-0-0 on an LSI controller,
    scsi0-0-0-0 on virtio-scsi), interfaces netN as libvirt's qemuAssignDeviceNetAlias (one
    more than the highest netN already there: no gap after a user alias), controllers by
    type and index (usb, pci.1, pcie.0, virtio-serial0; q35's AHCI and pc's IDE are "ide"). A user
    alias (`ua-...`) is kept. QEMU ids, QMP commands and the live XML use these names."""
    d = dom.devices
    q35 = _chipset(dom) is A.Chipset.Q35
    lsi = {c.index for c in d.controllers
           if c.type is ControllerType.SCSI and c.model in _NARROW_SCSI}
    disks = tuple(
        disk if disk.alias is not None
        else replace(disk, alias=auto_alias(disk, scsi_lsi=_on_lsi(disk, lsi)))
        for disk in d.disks
    )
    ifaces = _interface_aliases(d.interfaces)
    ctls = tuple(
        c if c.alias is not None
        else replace(c, alias=controller_alias(c.type, c.index, c.model, q35=q35))
        for c in d.controllers
    )
    return replace(dom, devices=replace(d, disks=disks, interfaces=ifaces, controllers=ctls))


_NARROW_SCSI = (ScsiModel.LSILOGIC,)  # qemuAssignDeviceDiskAlias: 3-part names on LSI only


def _on_lsi(disk: Disk, lsi: set[int]) -> bool:
    return isinstance(disk.address, A.DriveAddress) and disk.address.controller in lsi


def implicit_audio_video(dom: Domain) -> Domain:
    """libvirt's qemuDomainDefAddDefaultAudioBackend: a domain without <audio> gets backend 1
    (`none`, or `spice` under a SPICE display) that sound cards and VNC play into; and
    virDomainDefAddImplicitVideo: graphics without a <video> get the default card."""
    from tapvirt.conf.devices.graphics import implicit_video
    from tapvirt.conf.devices.sound import implicit_audio

    d = dom.devices
    audios = d.audios or (implicit_audio(d.graphics),)
    video = implicit_video(d.graphics, d.videos)
    videos = (video,) if video is not None else d.videos
    if audios == d.audios and videos == d.videos:
        return dom
    return replace(dom, devices=replace(d, audios=audios, videos=videos))


def assign_peripheral_aliases(dom: Domain) -> Domain:
    """libvirt's names for the other devices (qemuAssignDeviceAliases): input<N>, sound<N>,
    channel<N>, redir<N>, hub<N>, rng<N> by position, balloon0, watchdog0, tpm0, iommu0.
    After the implicit devices, so that they are numbered too."""
    d = dom.devices

    def numbered(items: tuple[_T, ...], prefix: str) -> tuple[_T, ...]:
        return tuple(x if x.alias is not None else replace(x, alias=f"{prefix}{n}")
                     for n, x in enumerate(items))

    new = replace(
        d, inputs=numbered(d.inputs, "input"), sounds=numbered(d.sounds, "sound"),
        channels=numbered(d.channels, "channel"), redirdevs=numbered(d.redirdevs, "redir"),
        hubs=numbered(d.hubs, "hub"),
        rngs=numbered(d.rngs, "rng"),
        memballoon=d.memballoon if d.memballoon is None or d.memballoon.alias is not None
        or d.memballoon.model == "none" else replace(d.memballoon, alias="balloon0"),
        watchdog=d.watchdog if d.watchdog is None or d.watchdog.alias is not None
        else replace(d.watchdog, alias="watchdog0"),
        tpm=d.tpm if d.tpm is None or d.tpm.alias is not None else replace(d.tpm, alias="tpm0"),
        iommu=d.iommu if d.iommu is None or d.iommu.alias is not None
        else replace(d.iommu, alias="iommu0"),
    )
    return dom if new == d else replace(dom, devices=new)


def memory_slots(dom: Domain) -> Domain:
    """libvirt's qemuDomainAssignMemorySlots: a dimm or nvdimm without <address> takes
    the lowest free slot (in document order), written into the definition; the aliases
    are dimm<slot> / nvdimm<slot>, a virtio-mem device's virtiomem<N> in order
    (qemuAssignDeviceMemoryAlias). The virtio-mem devices' PCI slots are pci_addresses'."""
    mems = dom.devices.memories
    if not mems:
        return dom
    used = {m.slot for m in mems if m.slot is not None}
    out = []
    vmem = 0
    for m in mems:
        if not m.on_slot:
            out.append(replace(m, alias=m.alias or f"virtiomem{vmem}"))
            vmem += 1
            continue
        slot = m.slot
        if slot is None:
            slot = next(n for n in range(len(mems) + len(used) + 1) if n not in used)
            used.add(slot)
        out.append(replace(m, slot=slot, alias=m.alias or f"{m.model}{slot}"))
    return replace(dom, devices=replace(dom.devices, memories=tuple(out)))


def boot_default(dom: Domain) -> Domain:
    """virDomainDefBootOrderPostParse: neither <os><boot> nor a per-device <boot order>
    means <boot dev='hd'/> (visible in dumpxml, and the first disk boots first)."""
    if dom.os.boot or any(d.boot_order for d in dom.devices.disks) or any(
            i.boot_order for i in dom.devices.interfaces):
        return dom
    return replace(dom, os=replace(dom.os, boot=(BootDev.HD,)))


# the buses QEMU makes a plain virtio device modern-only on (disable-legacy=auto: PCI
# Express and not a root bus)
_MODERN_BUSES = (A.PciModel.PCIE_ROOT_PORT, A.PciModel.PCIE_SWITCH_DOWNSTREAM_PORT)
_TRANSITIONAL = {"virtio-transitional": True, "virtio-non-transitional": False}


def virtio_iommu_modern(dom: Domain) -> Domain:
    """`<driver iommu='on'>` is QEMU's iommu_platform, which only a modern-only virtio
    device offers ("VIRTIO_F_IOMMU_PLATFORM was supported by neither legacy nor
    transitional device" at start otherwise): refused, once the addresses are known, on a
    transitional device (model virtio-transitional, or plain virtio on a conventional PCI
    or root bus). libvirt passes it to QEMU, which fails to start."""
    pci = {c.index: c.pci_model for c in dom.devices.controllers
           if c.type is ControllerType.PCI}
    d = dom.devices
    # (path, virtio options, model, address); the model says transitional or not, else
    # (plain virtio) the bus does
    items: list[tuple[str, Any, object, object]] = [
        (f"disk[{n + 1}]", k.virtio, None, k.address) for n, k in enumerate(d.disks)]
    items += [(f"interface[{n + 1}]", i.driver.virtio if i.driver else None, None, i.address)
              for n, i in enumerate(d.interfaces)]
    items += [(f"controller[{n + 1}]", c.driver.virtio, c.model, c.address)
              for n, c in enumerate(d.controllers) if c.driver is not None]
    if (b := d.memballoon) is not None:
        items.append(("memballoon", b.virtio, b.model, b.address))
    items += [(f"rng[{n + 1}]", r.virtio, r.model, r.address) for n, r in enumerate(d.rngs)]
    for where, opts, model, addr in items:
        if opts is None or not opts.iommu:
            continue
        trans = _TRANSITIONAL.get(str(model))
        if trans is None:
            bus = addr.bus if isinstance(addr, A.PciAddress) else 0
            trans = pci.get(bus) not in _MODERN_BUSES
        if trans:
            raise TapvirtError(
                VIRTIO_IOMMU_TRANSITIONAL, f"/domain/devices/{where}/driver/@iommu",
                "iommu='on' needs a modern-only virtio device, and this one is transitional "
                "(a transitional model, or on a conventional PCI or root bus): QEMU refuses "
                "to start it (VIRTIO_F_IOMMU_PLATFORM was supported by neither legacy nor "
                "transitional device)",
                "put the device on a pcie-root-port of a q35 machine (the default address "
                "there), use its virtio-non-transitional model, or remove iommu='on'",
            )
    return dom


STEPS: tuple[Callable[[Domain], Domain], ...] = (
    boot_default,
    machine_controllers,
    controller_models,
    drive_addresses,
    implicit_audio_video,
    virtio_serial_addresses,
    pci_addresses,
    virtio_iommu_modern,
    usb_addresses,
    memory_slots,
    assign_aliases,
    assign_peripheral_aliases,
)


def apply_defaults(dom: Domain) -> Domain:
    """The post-parse step: every default and implicit device, in order."""
    for step in STEPS:
        dom = step(dom)
    return dom
