"""Controllers on the command line, and the `bus`/`addr` (or `bus`/`port`, `bus`/`unit`)
properties every device gets from its stored address: libvirt 9.0's
qemuBuildControllersCommandLine and qemuBuildDeviceAddressProps for QEMU 7.2.

Machine-built-in controllers are not on the command line (pci-root / pcie-root, the
PIIX3 IDE on pc, the ICH9 AHCI on q35); `-machine usb=off` keeps QEMU from adding a USB
controller itself, so only the `<controller type='usb'>` of the definition exist.
"""

from __future__ import annotations

from typing import Any

from tapvirt.conf.addresses import (
    DriveAddress,
    PciAddress,
    PciModel,
    UsbAddress,
    VirtioSerialAddress,
)
from tapvirt.conf.devices.controller import (
    Controller,
    ControllerType,
    ScsiModel,
    UsbModel,
    VirtioSerialModel,
)
from tapvirt.conf.model import Domain
from tapvirt.qemu.argv.encode import jsonarg
from tapvirt.qemu.argv.machine import is_q35
from tapvirt.qemu.argv.virtio import virtio_device

# the QEMU device of each model
USB_DRIVERS = {
    UsbModel.PIIX3_UHCI: "piix3-usb-uhci", UsbModel.PIIX4_UHCI: "piix4-usb-uhci",
    UsbModel.EHCI: "usb-ehci", UsbModel.ICH9_EHCI1: "ich9-usb-ehci1",
    UsbModel.ICH9_UHCI1: "ich9-usb-uhci1", UsbModel.ICH9_UHCI2: "ich9-usb-uhci2",
    UsbModel.ICH9_UHCI3: "ich9-usb-uhci3", UsbModel.VT82C686B_UHCI: "vt82c686b-usb-uhci",
    UsbModel.PCI_OHCI: "pci-ohci", UsbModel.NEC_XHCI: "nec-usb-xhci",
    UsbModel.QEMU_XHCI: "qemu-xhci",
}
SCSI_DRIVERS = {
    ScsiModel.LSILOGIC: "lsi", ScsiModel.LSISAS1068: "mptsas1068",
    ScsiModel.LSISAS1078: "megasas", ScsiModel.VMPVSCSI: "pvscsi",
    ScsiModel.AM53C974: "am53c974", ScsiModel.DC390: "dc390",  # libvirt writes dc-390
    ScsiModel.VIRTIO_SCSI: "virtio-scsi-pci",
    ScsiModel.VIRTIO_TRANSITIONAL: "virtio-scsi-pci-transitional",
    ScsiModel.VIRTIO_NON_TRANSITIONAL: "virtio-scsi-pci-non-transitional",
}
VIRTIO_SERIAL_DRIVERS = {
    VirtioSerialModel.VIRTIO: "virtio-serial-pci",
    VirtioSerialModel.VIRTIO_TRANSITIONAL: "virtio-serial-pci-transitional",
    VirtioSerialModel.VIRTIO_NON_TRANSITIONAL: "virtio-serial-pci-non-transitional",
}
PCI_DRIVERS = {
    PciModel.PCI_BRIDGE: "pci-bridge", PciModel.DMI_TO_PCI_BRIDGE: "i82801b11-bridge",
    PciModel.PCIE_ROOT_PORT: "pcie-root-port",
    PciModel.PCIE_SWITCH_UPSTREAM_PORT: "x3130-upstream",
    PciModel.PCIE_SWITCH_DOWNSTREAM_PORT: "xio3130-downstream",
    PciModel.PCI_EXPANDER_BUS: "pxb", PciModel.PCIE_EXPANDER_BUS: "pxb-pcie",
    PciModel.PCIE_TO_PCI_BRIDGE: "pcie-pci-bridge",
}
_ORDER = (ControllerType.PCI, ControllerType.USB, ControllerType.SCSI, ControllerType.IDE,
          ControllerType.SATA, ControllerType.VIRTIO_SERIAL)


def controller_args(dom: Domain) -> list[str]:
    """-device for every controller QEMU does not have built in, in libvirt's order."""
    argv: list[str] = []
    ctls = dom.devices.controllers
    q35 = is_q35(dom)
    for ctype in _ORDER:
        for c in ctls:
            if c.type is not ctype or _builtin(c, q35):
                continue
            props = _props(dom, c)
            if props is not None:
                argv += ["-device", jsonarg(props)]
    return argv


def _builtin(c: Controller, q35: bool) -> bool:
    if c.type is ControllerType.PCI:
        return c.pci_model is not None and c.pci_model.is_root
    if c.index == 0 and ((c.type is ControllerType.SATA and q35)
                         or (c.type is ControllerType.IDE and not q35)):
        return True
    return c.type is ControllerType.USB and c.model in (UsbModel.NONE, None)


def _props(dom: Domain, c: Controller) -> dict[str, Any] | None:
    alias = c.alias or ""
    out: dict[str, Any]
    if c.type is ControllerType.USB:
        assert isinstance(c.model, UsbModel)
        out = {"driver": USB_DRIVERS[c.model]}
        if c.ports is not None:
            out["p2"] = c.ports
            out["p3"] = c.ports
        if c.master_startport is not None:
            master = next((m for m in dom.devices.controllers if m.type is ControllerType.USB
                           and m.index == c.index and m.master_startport is None), None)
            out["masterbus"] = f"{master.alias if master else 'usb'}.0"
            out["firstport"] = c.master_startport
        else:
            out["id"] = alias
    elif c.type is ControllerType.SCSI:
        assert isinstance(c.model, ScsiModel)
        out = virtio_device(SCSI_DRIVERS[c.model], c.driver.virtio if c.driver else None)
        if c.model.virtio:
            out["id"] = alias
            d = c.driver
            if d is not None:
                for key, value in (("num_queues", d.queues), ("cmd_per_lun", d.cmd_per_lun),
                                   ("max_sectors", d.max_sectors)):
                    if value is not None:
                        out[key] = value
                if d.ioeventfd is not None:
                    out["ioeventfd"] = d.ioeventfd
        else:
            out["id"] = alias
    elif c.type is ControllerType.VIRTIO_SERIAL:
        vs = c.model if isinstance(c.model, VirtioSerialModel) else VirtioSerialModel.VIRTIO
        out = virtio_device(VIRTIO_SERIAL_DRIVERS[vs], c.driver.virtio if c.driver else None)
        out["id"] = alias
        if c.ports is not None:
            out["max_ports"] = c.ports
        if c.vectors is not None:
            out["vectors"] = c.vectors
    elif c.type is ControllerType.SATA:
        out = {"driver": "ahci", "id": alias}
    elif c.type is ControllerType.CCID:
        out = {"driver": "usb-ccid", "id": alias}
    elif c.type is ControllerType.PCI:
        model = c.pci_model
        assert model is not None
        out = {"driver": c.model_name or PCI_DRIVERS[model]}
        t = c.target
        if model is PciModel.PCI_BRIDGE:
            out["chassis_nr"] = t.chassis_nr if t and t.chassis_nr is not None else c.index
            out["id"] = alias
        elif model in (PciModel.PCIE_ROOT_PORT, PciModel.PCIE_SWITCH_DOWNSTREAM_PORT):
            out["port"] = t.port if t and t.port is not None else 0
            out["chassis"] = t.chassis if t and t.chassis is not None else c.index
            out["id"] = alias
            if t is not None and t.hotplug is not None:
                out["hotplug"] = t.hotplug
        elif model in (PciModel.PCI_EXPANDER_BUS, PciModel.PCIE_EXPANDER_BUS):
            out["bus_nr"] = t.bus_nr if t and t.bus_nr is not None else 0
            out["id"] = alias
        else:
            out["id"] = alias
    else:
        return None  # IDE beyond the built-in one and FDC have no device of their own
    out.update(address_props(dom, c.address))
    return out


def address_props(dom: Domain, address: object) -> dict[str, Any]:
    """`bus` + `addr` (PCI), `bus` + `port` (USB), `bus` + `nr` (virtio-serial)."""
    if isinstance(address, PciAddress):
        out: dict[str, Any] = {"bus": pci_bus_alias(dom, address.bus)}
        if address.multifunction is not None:
            out["multifunction"] = address.multifunction
        out["addr"] = (f"{address.slot:#x}" if address.function == 0
                       else f"{address.slot:#x}.{address.function:#x}")
        return out
    if isinstance(address, UsbAddress):
        ctl = next((c for c in dom.devices.controllers
                    if c.type is ControllerType.USB and c.index == address.bus
                    and c.master_startport is None), None)
        return {"bus": f"{ctl.alias if ctl and ctl.alias else 'usb'}.0",
                "port": address.port_text}
    if isinstance(address, VirtioSerialAddress):
        return {"bus": f"virtio-serial{address.controller}.{address.bus}",
                "nr": address.port}
    return {}


def pci_bus_alias(dom: Domain, bus: int) -> str:
    # the root bus is the machine's own (pci.0 / pcie.0) whatever alias the user gave its
    # controller (user-aliases2 in libvirt's tests: QEMU has no bus 'ua-...')
    for c in dom.devices.controllers:
        if bus != 0 and c.type is ControllerType.PCI and c.index == bus and c.alias:
            return c.alias
    return ("pcie" if is_q35(dom) and bus == 0 else "pci") + f".{bus}"


def drive_bus_props(dom: Domain, bus: str, address: DriveAddress) -> dict[str, Any]:
    """Where a disk plugs into its controller (qemuBuildDeviceAddresDriveProps)."""
    q35 = is_q35(dom)
    if bus == "ide":
        return {"bus": f"ide.{address.bus}", "unit": address.unit}
    if bus == "sata":
        alias = "ide" if q35 and address.controller == 0 else f"sata{address.controller}"
        return {"bus": f"{alias}.{address.unit}"}
    if bus == "fdc":
        return {"unit": address.unit}
    ctl = next((c for c in dom.devices.controllers if c.type is ControllerType.SCSI
                and c.index == address.controller), None)
    alias = ctl.alias if ctl is not None and ctl.alias else f"scsi{address.controller}"
    if ctl is not None and ctl.model in (ScsiModel.LSILOGIC, ScsiModel.DC390,
                                         ScsiModel.AM53C974):
        return {"bus": f"{alias}.{address.bus}", "scsi-id": address.unit}
    return {"bus": f"{alias}.0", "channel": address.bus, "scsi-id": address.target,
            "lun": address.unit}
