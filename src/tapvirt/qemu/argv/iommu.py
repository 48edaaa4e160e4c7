"""QEMU arguments of `<iommu>`: `-device intel-iommu` with its driver properties, or
`-device virtio-iommu` on its root-bus slot, after -boot and before the controllers
(qemuBuildIOMMUCommandLine). The split irqchip that interrupt remapping needs is
`<ioapic driver='qemu'/>`'s `kernel_irqchip=split` on -machine (`features`). PURE."""

from __future__ import annotations

from typing import Any

from tapvirt.conf.devices.iommu import IommuModel
from tapvirt.conf.model import Domain
from tapvirt.qemu.argv.controller import address_props
from tapvirt.qemu.argv.encode import jsonarg


def _on_off(value: bool) -> str:
    return "on" if value else "off"


def iommu_args(dom: Domain) -> list[str]:
    iommu = dom.devices.iommu
    if iommu is None:
        return []
    obj: dict[str, Any] = {"id": iommu.alias or "iommu0"}
    if iommu.model is IommuModel.INTEL:
        obj = {"driver": "intel-iommu", **obj}
        # libvirt's order; intremap/eim are QEMU OnOffAuto strings, the others booleans
        if iommu.intremap is not None:
            obj["intremap"] = _on_off(iommu.intremap)
        if iommu.caching_mode is not None:
            obj["caching-mode"] = iommu.caching_mode
        if iommu.eim is not None:
            obj["eim"] = _on_off(iommu.eim)
        if iommu.iotlb is not None:
            obj["device-iotlb"] = iommu.iotlb
        if iommu.aw_bits:
            obj["aw-bits"] = iommu.aw_bits
    else:  # virtio (smmuv3 is refused when parsing)
        obj = {"driver": "virtio-iommu", **obj, **address_props(dom, iommu.address)}
    return ["-device", jsonarg(obj)]
