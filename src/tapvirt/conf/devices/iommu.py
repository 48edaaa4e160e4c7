"""`<iommu model='intel|virtio|smmuv3'>`: the guest's IOMMU, with libvirt 9.0's parse,
rules (virDomainIOMMUDefValidate, virDomainDefIOMMUValidate,
qemuValidateDomainDeviceDefIOMMU; same messages) and canonical format. The QEMU argument
is in `tapvirt.qemu.argv.misc`.

* intel: `-device intel-iommu` (a sysbus device of q35, no address); `<driver intremap
  caching_mode eim iotlb aw_bits>`. Interrupt remapping needs the split irqchip
  (`<ioapic driver='qemu'/>`), eim needs interrupt remapping.
* virtio: `-device virtio-iommu` on the root bus (an integrated PCI device), q35 and ACPI.
* smmuv3 exists only on ARM virt machines: refused by name.

Beyond libvirt, what QEMU 7.2 would refuse at start is refused here by name: `eim='on'`
without KVM ("eim=on requires accel=kvm"), and aw_bits other than 39 or 48.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from enum import StrEnum
from typing import TYPE_CHECKING

from tapvirt.conf.addresses import Address, AddressType
from tapvirt.conf.devices.common import address_lines, parse_alias, parse_device_address
from tapvirt.conf.devices.misc import on_off, on_off_text
from tapvirt.errors import define

if TYPE_CHECKING:
    from lxml import etree

    from tapvirt.conf.xml import Reader

IOMMU_INVALID = define(
    "iommu-invalid",
    "an <iommu> whose driver settings or address do not go together, or with the rest of "
    "the domain (libvirt's rules for IOMMU devices)",
    layer="conf",
)
IOMMU_UNSUPPORTED = define(
    "iommu-unsupported",
    "an <iommu> model or setting that this machine type, architecture or accelerator lacks "
    "(smmuv3 off ARM, intel off q35, eim without KVM)",
    layer="conf",
)

AW_BITS = (39, 48)  # QEMU 7.2's intel-iommu accepts only these address widths
_ALIAS = "iommu0"


class IommuModel(StrEnum):
    INTEL = "intel"
    SMMUV3 = "smmuv3"
    VIRTIO = "virtio"


@dataclass(frozen=True)
class Iommu:
    model: IommuModel
    intremap: bool | None = None
    caching_mode: bool | None = None
    eim: bool | None = None
    iotlb: bool | None = None
    aw_bits: int | None = None
    alias: str | None = None
    address: Address | None = None  # virtio: its PCI slot, assigned after parsing

    @property
    def has_driver_settings(self) -> bool:
        return any(v is not None for v in (self.intremap, self.caching_mode, self.eim,
                                            self.iotlb, self.aw_bits))


def parse_iommu(r: Reader, el: etree._Element) -> Iommu:
    found = r.shape(el, ("model",), ("driver", "alias", "address"), required_attrs=("model",))
    model = r.enum(el, "model", IommuModel)
    values: dict[str, bool | int | None] = {}
    if (d := r.one(found, "driver")) is not None:
        r.shape(d, ("intremap", "caching_mode", "eim", "iotlb", "aw_bits"))
        for attr in ("intremap", "caching_mode", "eim", "iotlb"):
            values[attr] = on_off(r, d, attr)
        if d.get("aw_bits") is not None:
            values["aw_bits"] = r.uint(d, "aw_bits", 0, 2**32 - 1)
    a_el = r.one(found, "address")
    iommu = Iommu(model, alias=parse_alias(r, r.one(found, "alias"), _ALIAS),
                  **values)  # type: ignore[arg-type]
    if model is not IommuModel.INTEL and iommu.has_driver_settings:
        raise r.fail(
            IOMMU_INVALID, d if d is not None else el,
            f"iommu model '{model}' doesn't support additional attributes",
            "remove the <driver> attributes (they are intel-iommu's), or use model='intel'",
        )
    if model is IommuModel.INTEL and a_el is not None:
        raise r.fail(IOMMU_INVALID, a_el, f"iommu model '{model}' can't have address",
                     "remove <address>: intel-iommu is part of the q35 chipset")
    if model is IommuModel.SMMUV3:
        raise r.fail(
            IOMMU_UNSUPPORTED, el,
            "IOMMU device: 'smmuv3' is only supported with ARM Virt machines",
            "use model='intel' (q35) or model='virtio' (q35 with <acpi/>) on x86",
            attr="model",
        )
    if model is IommuModel.VIRTIO and a_el is not None and a_el.get("type") != "pci":
        raise r.fail(IOMMU_INVALID, a_el, "IOMMU device: 'virtio' needs a PCI address",
                     "write <address type='pci' .../> on bus 0, or remove <address>")
    if iommu.aw_bits is not None and iommu.aw_bits not in AW_BITS:
        assert d is not None
        raise r.fail(
            IOMMU_UNSUPPORTED, d,
            f"aw_bits='{iommu.aw_bits}': QEMU's intel-iommu supports address widths "
            "of 39 and 48 bits only", "write aw_bits='39' or aw_bits='48'", attr="aw_bits",
        )
    address = parse_device_address(r, a_el, (AddressType.PCI,), "a virtio IOMMU")
    return replace(iommu, address=address)


def check_iommu(r: Reader, el: etree._Element, iommu: Iommu, *, q35: bool, acpi: bool,
                split_irqchip: bool, kvm: bool) -> None:
    """The rules that depend on the rest of the domain, in libvirt's order."""
    d_el = el.find("driver")
    d_or_el = d_el if d_el is not None else el
    if iommu.intremap and not split_irqchip:
        raise r.fail(
            IOMMU_INVALID, d_or_el,
            "IOMMU interrupt remapping requires split I/O APIC (ioapic driver='qemu')",
            "add <ioapic driver='qemu'/> to <features>, or remove intremap='on'",
            attr="intremap",
        )
    if iommu.eim and not iommu.intremap:
        raise r.fail(IOMMU_INVALID, d_or_el,
                     "IOMMU eim requires interrupt remapping to be enabled",
                     "add intremap='on' to <driver> (with <ioapic driver='qemu'/>)",
                     attr="eim")
    if iommu.model is IommuModel.INTEL and not q35:
        raise r.fail(IOMMU_UNSUPPORTED, el,
                     "IOMMU device: 'intel' is only supported with Q35 machines",
                     "use <type machine='q35'>hvm</type>", attr="model")
    if iommu.model is IommuModel.VIRTIO:
        if not q35:
            raise r.fail(IOMMU_UNSUPPORTED, el,
                         "IOMMU device: 'virtio' is only supported with Q35 and ARM Virt "
                         "machines", "use <type machine='q35'>hvm</type>", attr="model")
        if not acpi:
            raise r.fail(IOMMU_INVALID, el, "IOMMU device: 'virtio' requires ACPI",
                         "add <acpi/> to <features>")
    if iommu.eim and not kvm:
        raise r.fail(
            IOMMU_UNSUPPORTED, d_or_el,
            "eim='on' (extended interrupt mode) needs KVM: QEMU 7.2 refuses it under TCG "
            "(\"eim=on requires accel=kvm,kernel-irqchip=split\")",
            "remove eim= for <domain type='qemu'>, or use <domain type='kvm'>", attr="eim",
        )


def format_iommu(iommu: Iommu, ind: str, live: bool) -> list[str]:
    from tapvirt.conf.devices.misc import _alias_lines
    from tapvirt.conf.xmlout import a as _a

    attrs = ""
    for attr in ("intremap", "caching_mode", "eim", "iotlb"):
        value = on_off_text(getattr(iommu, attr))
        if value is not None:
            attrs += f" {attr}={_a(value)}"
    if iommu.aw_bits is not None:
        attrs += f" aw_bits='{iommu.aw_bits}'"
    body = [f"{ind}  <driver{attrs}/>"] if attrs else []
    body += _alias_lines(iommu.alias, ind, live) + address_lines(iommu.address, ind)
    head = f"{ind}<iommu model={_a(iommu.model)}"
    if not body:
        return [head + "/>"]
    return [head + ">", *body, f"{ind}</iommu>"]
