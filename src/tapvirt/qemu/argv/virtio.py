"""The -device properties of libvirt's virtio options (`tapvirt.conf.devices.virtio`):
libvirt's qemuBuildVirtioDevProps puts them right after the driver name."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tapvirt.conf.devices.virtio import VirtioOptions


def virtio_device(driver: str, opts: VirtioOptions | None) -> dict[str, Any]:
    """`{"driver": driver, <the options that are given>}`, in libvirt's key order."""
    out: dict[str, Any] = {"driver": driver}
    if opts is not None:
        for key, value in (("iommu_platform", opts.iommu), ("ats", opts.ats),
                           ("packed", opts.packed), ("page-per-vq", opts.page_per_vq)):
            if value is not None:
                out[key] = value
    return out
