"""`<controller>`: USB, PCI (roots, root ports, bridges), SATA, SCSI, virtio-serial, IDE,
floppy and CCID controllers: the model, parse, rules and canonical format.

libvirt's semantics: a missing index is the lowest free one of that type (USB2
companions share their EHCI's index), the model is type-specific, two controllers of a
type may not share an index (except the companions of one USB2 controller). Which
controllers a machine has without being asked, their default models and their addresses
are added after parsing (`tapvirt.conf.defaults`), so that `dumpxml` shows them.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from enum import StrEnum
from typing import TYPE_CHECKING, cast

from tapvirt.conf import errors as E
from tapvirt.conf.addresses import (
    Address,
    AddressType,
    PciModel,
    format_address,
    parse_address,
)
from tapvirt.conf.devices.common import format_alias, parse_alias
from tapvirt.conf.devices.virtio import (
    VIRTIO_ATTRS,
    VirtioOptions,
    parse_virtio_options,
    virtio_attrs,
)
from tapvirt.conf.xmlout import IND, Writer, a

if TYPE_CHECKING:
    from lxml import etree

    from tapvirt.conf.xml import Reader


class ControllerType(StrEnum):
    IDE = "ide"
    FDC = "fdc"
    SCSI = "scsi"
    SATA = "sata"
    VIRTIO_SERIAL = "virtio-serial"
    CCID = "ccid"
    USB = "usb"
    PCI = "pci"


class UsbModel(StrEnum):
    PIIX3_UHCI = "piix3-uhci"
    PIIX4_UHCI = "piix4-uhci"
    EHCI = "ehci"
    ICH9_EHCI1 = "ich9-ehci1"
    ICH9_UHCI1 = "ich9-uhci1"
    ICH9_UHCI2 = "ich9-uhci2"
    ICH9_UHCI3 = "ich9-uhci3"
    VT82C686B_UHCI = "vt82c686b-uhci"
    PCI_OHCI = "pci-ohci"
    NEC_XHCI = "nec-xhci"
    QEMU_XHCI = "qemu-xhci"
    NONE = "none"

    @property
    def usb2(self) -> bool:
        """An EHCI with UHCI companions (libvirt's IS_USB2_CONTROLLER)."""
        return self in _USB2

    @property
    def xhci(self) -> bool:
        return self in (UsbModel.NEC_XHCI, UsbModel.QEMU_XHCI)


_USB2 = (UsbModel.ICH9_EHCI1, UsbModel.ICH9_UHCI1, UsbModel.ICH9_UHCI2, UsbModel.ICH9_UHCI3)


class ScsiModel(StrEnum):
    AUTO = "auto"
    BUSLOGIC = "buslogic"
    LSILOGIC = "lsilogic"
    LSISAS1068 = "lsisas1068"
    VMPVSCSI = "vmpvscsi"
    IBMVSCSI = "ibmvscsi"
    VIRTIO_SCSI = "virtio-scsi"
    LSISAS1078 = "lsisas1078"
    VIRTIO_TRANSITIONAL = "virtio-transitional"
    VIRTIO_NON_TRANSITIONAL = "virtio-non-transitional"
    NCR53C90 = "ncr53c90"
    AM53C974 = "am53c974"
    DC390 = "dc390"

    @property
    def virtio(self) -> bool:
        return self in (ScsiModel.VIRTIO_SCSI, ScsiModel.VIRTIO_TRANSITIONAL,
                        ScsiModel.VIRTIO_NON_TRANSITIONAL)


class VirtioSerialModel(StrEnum):
    VIRTIO = "virtio"
    VIRTIO_TRANSITIONAL = "virtio-transitional"
    VIRTIO_NON_TRANSITIONAL = "virtio-non-transitional"


# what QEMU 7.2 on x86 cannot run (refused by name instead of failing at start)
_SCSI_REFUSED = {
    ScsiModel.AUTO: "libvirt cannot pick a device for model 'auto' either",
    ScsiModel.BUSLOGIC: "QEMU has no BusLogic device",
    ScsiModel.IBMVSCSI: "spapr-vscsi exists only on ppc64 pSeries machines",
    ScsiModel.NCR53C90: "the NCR53C90 is built into sparc machines only",
}

# <model name=...>: the QEMU device a PCI controller model may be (libvirt's
# virDomainControllerPCIModelName, limited to each model's possible names)
PCI_MODEL_NAMES: dict[PciModel, tuple[str, ...]] = {
    PciModel.PCI_ROOT: (),
    PciModel.PCIE_ROOT: (),
    PciModel.PCI_BRIDGE: ("pci-bridge",),
    PciModel.DMI_TO_PCI_BRIDGE: ("i82801b11-bridge",),
    PciModel.PCIE_ROOT_PORT: ("pcie-root-port", "ioh3420"),
    PciModel.PCIE_SWITCH_UPSTREAM_PORT: ("x3130-upstream",),
    PciModel.PCIE_SWITCH_DOWNSTREAM_PORT: ("xio3130-downstream",),
    PciModel.PCI_EXPANDER_BUS: ("pxb",),
    PciModel.PCIE_EXPANDER_BUS: ("pxb-pcie",),
    PciModel.PCIE_TO_PCI_BRIDGE: ("pcie-pci-bridge",),
}

# the <target> attributes each PCI model has (libvirt's schema, pciController)
_PCI_TARGET_ATTRS: dict[PciModel, tuple[str, ...]] = {
    PciModel.PCI_ROOT: ("hotplug",),
    PciModel.PCI_BRIDGE: ("chassisNr", "hotplug"),
    PciModel.PCIE_ROOT_PORT: ("chassis", "port", "hotplug"),
    PciModel.PCIE_SWITCH_DOWNSTREAM_PORT: ("chassis", "port", "hotplug"),
    PciModel.PCI_EXPANDER_BUS: ("busNr",),
    PciModel.PCIE_EXPANDER_BUS: ("busNr",),
    PciModel.PCIE_TO_PCI_BRIDGE: ("hotplug",),
}

XHCI_MAX_PORTS = 15
MAX_CONTROLLER_INDEX = 255  # a PCI bus number; far more than any other type needs


@dataclass(frozen=True)
class PciTarget:
    """`<target>` of a PCI controller: None where libvirt leaves the choice to QEMU or
    to itself (root port chassis/port are filled in with the addresses)."""

    chassis_nr: int | None = None
    chassis: int | None = None
    port: int | None = None
    bus_nr: int | None = None
    hotplug: bool | None = None


@dataclass(frozen=True)
class ControllerDriver:
    """`<driver>` of a SCSI (virtio) controller; the virtio options of a virtio-scsi or
    virtio-serial one."""

    queues: int | None = None
    cmd_per_lun: int | None = None
    max_sectors: int | None = None
    ioeventfd: bool | None = None
    virtio: VirtioOptions | None = None


ControllerModel = UsbModel | ScsiModel | VirtioSerialModel | PciModel


@dataclass(frozen=True)
class Controller:
    type: ControllerType
    index: int
    # the model for this type (UsbModel, ScsiModel, VirtioSerialModel, PciModel); None:
    # not given, the machine's default is filled in after parsing (none for SATA/IDE/FDC)
    model: ControllerModel | None = None
    ports: int | None = None  # usb (xhci): ports; virtio-serial: max_ports
    vectors: int | None = None  # virtio-serial
    model_name: str | None = None  # pci: the QEMU device (<model name=...>)
    target: PciTarget | None = None  # pci
    driver: ControllerDriver | None = None  # scsi, virtio-serial
    master_startport: int | None = None  # usb companions: <master startport=...>
    alias: str | None = None
    address: Address | None = None

    @property
    def pci_model(self) -> PciModel | None:
        return self.model if isinstance(self.model, PciModel) else None

    @property
    def usb_model(self) -> UsbModel | None:
        return self.model if isinstance(self.model, UsbModel) else None


_MODELS: dict[ControllerType, type[StrEnum] | None] = {
    ControllerType.USB: UsbModel,
    ControllerType.SCSI: ScsiModel,
    ControllerType.VIRTIO_SERIAL: VirtioSerialModel,
    ControllerType.PCI: PciModel,
    ControllerType.IDE: None,
    ControllerType.FDC: None,
    ControllerType.SATA: None,
    ControllerType.CCID: None,
}

# what each type of controller may sit on
_COMPANION_STARTPORT: dict[ControllerModel, int] = {
    UsbModel.ICH9_UHCI1: 0, UsbModel.ICH9_UHCI2: 2, UsbModel.ICH9_UHCI3: 4,
}
_ADDRESS: dict[ControllerType, tuple[AddressType, ...]] = {
    ControllerType.CCID: (AddressType.USB,),
    ControllerType.FDC: (),
}


def parse_controller(r: Reader, el: etree._Element) -> tuple[Controller, bool]:
    """One `<controller>`; the bool says whether its index was given."""
    ctype_raw = el.get("type")
    attrs = ["type", "index", "model"]
    children = ["alias", "address"]
    if ctype_raw in ("usb", "virtio-serial"):
        attrs.append("ports")
    if ctype_raw == "virtio-serial":
        attrs.append("vectors")
    if ctype_raw == "usb":
        children.append("master")
    if ctype_raw == "pci":
        children += ["model", "target"]
    if ctype_raw in ("scsi", "virtio-serial"):
        children.append("driver")
    found = r.shape(el, attrs, children, required_attrs=("type",))
    ctype = r.enum(el, "type", ControllerType)
    index_given = el.get("index") is not None
    index = r.uint(el, "index", 0, MAX_CONTROLLER_INDEX) if index_given else -1
    model: ControllerModel | None = None
    if el.get("model") is not None:
        enum = _MODELS[ctype]
        if enum is None:
            raise r.fail(
                E.UNSUPPORTED_ATTRIBUTE, el,
                f"a controller of type '{ctype}' has no model",
                "remove model=", attr="model",
            )
        model = cast("ControllerModel", r.enum(el, "model", enum))
    if ctype is ControllerType.PCI and model is None:
        # libvirt's schema requires it (its C parser would pick one per machine)
        raise r.fail(
            E.MISSING_ATTRIBUTE, el, "a PCI controller needs a model",
            "write model='pci-root'/'pcie-root' for index 0, model='pci-bridge' (pc) or "
            "model='pcie-root-port' (q35) beyond it", attr="model",
        )
    if isinstance(model, ScsiModel) and model in _SCSI_REFUSED:
        raise r.fail(
            E.UNSUPPORTED_MODEL, el,
            f"SCSI controller model '{model}' is not supported: {_SCSI_REFUSED[model]}",
            "use model='virtio-scsi' (or lsilogic for old guests)", attr="model",
        )
    ports = vectors = None
    if el.get("ports") is not None:
        ports = r.uint(el, "ports", 1, 255 if ctype is ControllerType.USB else 31)
        if ctype is ControllerType.USB:
            if not (isinstance(model, UsbModel) and model.xhci):
                raise r.fail(
                    E.INVALID_VALUE, el,
                    f"usb controller type {model or 'piix3-uhci'} doesn't support 'ports' "
                    "with this QEMU binary", "remove ports= or use model='qemu-xhci'",
                    attr="ports",
                )
            if ports > XHCI_MAX_PORTS:
                raise r.fail(
                    E.INVALID_VALUE, el,
                    f"'{model}' controller only supports up to '{XHCI_MAX_PORTS}' ports",
                    f"use ports='{XHCI_MAX_PORTS}' or fewer", attr="ports",
                )
    if el.get("vectors") is not None:
        vectors = r.uint(el, "vectors", 1, 2048)
    model_name, target = _pci_children(r, found, ctype, model)
    driver = None
    if (d := r.one(found, "driver")) is not None:
        r.shape(d, ("queues", "cmd_per_lun", "max_sectors", "ioeventfd", *VIRTIO_ATTRS))
        virtio_model = (ctype is ControllerType.VIRTIO_SERIAL
                        or (isinstance(model, ScsiModel) and model.virtio))
        onoff = d.get("ioeventfd")
        if onoff is not None and onoff not in ("on", "off"):
            raise r.fail(
                E.INVALID_VALUE, d,
                f"Invalid value for attribute 'ioeventfd' in element 'driver': "
                f"'{onoff[:40]}'.", "use on or off", attr="ioeventfd",
            )
        driver = ControllerDriver(
            queues=r.uint(d, "queues", 1, 1024) if d.get("queues") else None,
            cmd_per_lun=r.uint(d, "cmd_per_lun", 1, 2**32 - 1) if d.get("cmd_per_lun")
            else None,
            max_sectors=r.uint(d, "max_sectors", 1, 2**32 - 1) if d.get("max_sectors")
            else None,
            ioeventfd=None if onoff is None else onoff == "on",
            virtio=parse_virtio_options(r, d, virtio_model),
        )
        if driver == ControllerDriver():
            driver = None  # an empty <driver/> says nothing: not kept (as for interfaces)
        elif replace(driver, virtio=None) != ControllerDriver() and not (
                isinstance(model, ScsiModel) and model.virtio):
            raise r.fail(
                E.NOT_FOR_TYPE, d,
                "queues, cmd_per_lun, max_sectors and ioeventfd are virtio-scsi settings",
                "use model='virtio-scsi' or remove <driver>",
            )
    startport = None
    if (m := r.one(found, "master")) is not None:
        r.shape(m, ("startport",), required_attrs=("startport",))
        startport = r.uint(m, "startport", 0, 15)
    elif model in _COMPANION_STARTPORT:
        # libvirt's parser: an ich9 UHCI companion without <master> gets the start port of
        # its position (uhci1 0, uhci2 2, uhci3 4) and is formatted with it
        startport = _COMPANION_STARTPORT[model]
    address = None
    if (ad := r.one(found, "address")) is not None:
        allowed = _ADDRESS.get(ctype, (AddressType.PCI,))
        address = parse_address(r, ad, allowed, f"a {ctype} controller")
    auto = controller_alias(ctype, max(index, 0), model, q35=False)
    q35_auto = controller_alias(ctype, max(index, 0), model, q35=True)
    if (al := r.one(found, "alias")) is not None and al.get("name") == q35_auto:
        auto = q35_auto  # a q35 guest's live XML names its AHCI 'ide' (dumpxml -> define)
    return Controller(
        type=ctype, index=index, model=model, ports=ports, vectors=vectors,
        model_name=model_name, target=target, driver=driver, master_startport=startport,
        alias=_user_alias(parse_alias(r, r.one(found, "alias"), auto)), address=address,
    ), index_given


def _user_alias(alias: str | None) -> str | None:
    """The automatic name depends on the final index and machine: the post-parse step
    gives it; only a user alias is kept from the XML."""
    return alias if alias is not None and alias.startswith("ua-") else None


def _pci_children(
    r: Reader, found: dict[str, list[etree._Element]], ctype: ControllerType,
    model: object,
) -> tuple[str | None, PciTarget | None]:
    if ctype is not ControllerType.PCI:
        return None, None
    model_name = None
    if (mn := r.one(found, "model")) is not None:
        r.shape(mn, ("name",), required_attrs=("name",))
        names = PCI_MODEL_NAMES.get(model, ()) if isinstance(model, PciModel) else ()
        model_name = mn.get("name", "")
        if model_name not in names:
            raise r.fail(
                E.INVALID_VALUE, mn,
                f"PCI controller model name '{model_name[:40]}' is not valid for a "
                f"{model or 'pci'} controller",
                f"use {' or '.join(names)}, or remove <model>" if names
                else "remove <model name=...>", attr="name",
            )
    target = None
    if (t := r.one(found, "target")) is not None:
        allowed = _PCI_TARGET_ATTRS.get(model, ()) if isinstance(model, PciModel) else ()
        r.shape(t, allowed)
        hp = t.get("hotplug")
        if hp is not None and hp not in ("on", "off"):
            raise r.fail(E.INVALID_VALUE, t, f"Invalid value for attribute 'hotplug' in "
                         f"element 'target': '{hp[:40]}'.", "use on or off", attr="hotplug")
        target = PciTarget(
            chassis_nr=r.uint(t, "chassisNr", 1, 255) if t.get("chassisNr") else None,
            chassis=r.uint(t, "chassis", 0, 255) if t.get("chassis") else None,
            port=_port(r, t) if t.get("port") else None,
            bus_nr=r.uint(t, "busNr", 1, 254) if t.get("busNr") else None,
            hotplug=None if hp is None else hp == "on",
        )
        if target == PciTarget():
            target = None  # an empty <target/> says nothing
    return model_name, target


def _port(r: Reader, t: etree._Element) -> int:
    raw = t.get("port", "")
    try:
        value = int(raw, 0) if len(raw) <= 6 else -1
    except ValueError:
        value = -1
    if not 0 <= value <= 255:
        raise r.fail(
            E.INVALID_VALUE, t, f"Invalid value for attribute 'port' in element 'target': "
            f"'{raw[:40]}'. Expected integer value", "write port='0x10' (0..255)", attr="port",
        )
    return value


def parse_controllers(
    r: Reader, els: list[etree._Element]
) -> tuple[list[etree._Element], list[Controller]]:
    """Every `<controller>`, in libvirt's order (virDomainControllerInsertPreAlloced: a
    controller goes before the first one of its type with a higher index), with the
    missing indexes filled in; the elements in the same order, for errors."""
    order: list[tuple[etree._Element, Controller, bool]] = []
    usb_none = usb_other = usb_master = False
    for el in els:
        c, given = parse_controller(r, el)
        if c.type is ControllerType.USB:
            if c.model is UsbModel.NONE:
                if usb_other or usb_none:
                    raise r.fail(E.DUPLICATE_ELEMENT, el, "Can't add another USB controller: "
                                 "USB is disabled for this domain",
                                 "remove the controller with model='none' or the others")
                usb_none = True
            else:
                if usb_none:
                    raise r.fail(E.DUPLICATE_ELEMENT, el, "Can't add another USB controller: "
                                 "USB is disabled for this domain",
                                 "remove the controller with model='none' or the others")
                usb_other = True
            if c.master_startport is None:
                usb_master = True
        _insert(order, el, c, given)
    if usb_other and not usb_master:
        raise r.fail(E.MISSING_ELEMENT, els[0], "No master USB controller specified",
                     "add the USB2 controller (ich9-ehci1) its companions belong to")
    ctls = assign_indexes([c for _, c, _ in order], [g for _, _, g in order])
    # once every index is known, the same rule again, so that the canonical XML reads
    # back in the same order (format(parse(x)) is a fixed point)
    final: list[tuple[etree._Element, Controller, bool]] = []
    for (el, _, _), c in zip(order, ctls, strict=True):
        _insert(final, el, c, True)
    return [el for el, _, _ in final], [c for _, c, _ in final]


def _insert(
    order: list[tuple[etree._Element, Controller, bool]], el: etree._Element, c: Controller,
    given: bool,
) -> None:
    at = len(order)
    for pos in range(len(order) - 1, -1, -1):
        _, cur, cur_given = order[pos]
        if cur.type is not c.type:
            continue
        if not given:
            at = pos + 1
            break
        # before a higher index, and a master before its companions
        master_first = c.master_startport is None and cur.master_startport is not None
        if cur_given and (cur.index > c.index or (master_first and cur.index == c.index)):
            at = pos
    order.insert(at, (el, c, given))


def insert_controller(ctls: list[Controller], c: Controller) -> None:
    """Add `c` where libvirt's parser would put it (all indexes known)."""
    at = len(ctls)
    for pos in range(len(ctls) - 1, -1, -1):
        cur = ctls[pos]
        if cur.type is not c.type:
            continue
        master_first = c.master_startport is None and cur.master_startport is not None
        if cur.index > c.index or (master_first and cur.index == c.index):
            at = pos
    ctls.insert(at, c)


def assign_indexes(ctls: list[Controller], given: list[bool]) -> list[Controller]:
    """libvirt's virDomainAssignControllerIndexes: the lowest unused index of the type; a
    USB2 companion right after USB2 controllers joins their index."""
    from dataclasses import replace

    out = list(ctls)
    for i, c in enumerate(out):
        if given[i]:
            continue
        index = None
        if isinstance(c.model, UsbModel) and c.model.usb2:
            prev = next((p for p in reversed(out[:i]) if p.type is ControllerType.USB), None)
            usb2 = prev is not None and isinstance(prev.model, UsbModel) and prev.model.usb2
            if prev is not None and usb2 and not any(
                o.type is ControllerType.USB and o.index == prev.index and o.model == c.model
                for o in out[:i]
            ):
                index = prev.index
        if index is None:
            used = {o.index for j, o in enumerate(out) if o.type is c.type and (given[j] or j < i)}
            index = next(n for n in range(len(out) + 1) if n not in used)
        out[i] = replace(c, index=index)
    return out


def controller_alias(ctype: ControllerType, index: int, model: object, *, q35: bool) -> str:
    """libvirt's qemuAssignDeviceControllerAlias (the id QEMU knows the controller by)."""
    if ctype is ControllerType.PCI:
        return f"pcie.{index}" if model is PciModel.PCIE_ROOT else f"pci.{index}"
    if index == 0 and (
        ctype is ControllerType.USB or (ctype is ControllerType.IDE and not q35)
        or (ctype is ControllerType.SATA and q35)
    ):
        return "ide" if ctype is not ControllerType.USB else "usb"
    return f"{ctype}{index}"


def check_controllers(r: Reader, els: list[etree._Element], ctls: list[Controller]) -> None:
    """libvirt's virDomainDefRejectDuplicateControllers (USB2 companions may share)."""
    seen: dict[tuple[ControllerType, int], tuple[etree._Element, Controller]] = {}
    for el, c in zip(els, ctls, strict=True):
        key = (c.type, c.index)
        other = seen.get(key)
        if other is not None:
            o = other[1]
            companions = (
                isinstance(c.model, UsbModel) and isinstance(o.model, UsbModel)
                and c.model.usb2 and o.model.usb2 and c.model != o.model
            )
            if not companions:
                raise r.fail(
                    E.DUPLICATE_ELEMENT, el,
                    f"Multiple '{c.type}' controllers with index '{c.index}'",
                    f"give each {c.type} controller its own index (the other is at line "
                    f"{other[0].sourceline})",
                )
        else:
            seen[key] = (el, c)
        if c.pci_model is not None and c.pci_model.is_root and c.index != 0:
            raise r.fail(
                E.INVALID_VALUE, el, "pci-root and pcie-root controllers should have index 0",
                "write index='0' (a machine has one root bus)", attr="index",
            )


def format_controller(c: Controller, w: Writer, live: bool) -> None:
    i2, i3 = IND * 2, IND * 3
    head = f"{i2}<controller type={a(c.type)} index='{c.index}'"
    if c.model is not None:
        head += f" model={a(c.model)}"
    if c.ports is not None:
        head += f" ports='{c.ports}'"
    if c.vectors is not None:
        head += f" vectors='{c.vectors}'"
    body: list[str] = []
    b = body.append
    if c.model_name is not None:
        b(f"{i3}<model name={a(c.model_name)}/>")
    if c.target is not None:
        t = c.target
        attrs = ""
        if t.chassis_nr is not None:
            attrs += f" chassisNr='{t.chassis_nr}'"
        if t.chassis is not None:
            attrs += f" chassis='{t.chassis}'"
        if t.port is not None:
            attrs += f" port='{t.port:#x}'"
        if t.bus_nr is not None:
            attrs += f" busNr='{t.bus_nr}'"
        if t.hotplug is not None:
            attrs += f" hotplug='{'on' if t.hotplug else 'off'}'"
        if attrs:
            b(f"{i3}<target{attrs}/>")
    if c.driver is not None and c.driver != ControllerDriver():
        d = c.driver
        attrs = ""
        for name, value in (("queues", d.queues), ("cmd_per_lun", d.cmd_per_lun),
                            ("max_sectors", d.max_sectors)):
            if value is not None:
                attrs += f" {name}='{value}'"
        if d.ioeventfd is not None:
            attrs += f" ioeventfd='{'on' if d.ioeventfd else 'off'}'"
        b(f"{i3}<driver{attrs}{virtio_attrs(d.virtio)}/>")
    format_alias(c.alias, b, live)
    if c.master_startport is not None:
        b(f"{i3}<master startport='{c.master_startport}'/>")
    if c.address is not None:
        b(f"{i3}{format_address(c.address)}")
    if not body:
        w(head + "/>")
        return
    w(head + ">")
    for line in body:
        w(line)
    w(f"{i2}</controller>")
