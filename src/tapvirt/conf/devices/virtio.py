"""libvirt's virtio options: the `iommu`, `ats`, `packed` and `page_per_vq` attributes of
a virtio device's `<driver>` (disk, interface, controller, input, memballoon, rng).

They are properties of the QEMU device itself (iommu_platform, ats, packed, page-per-vq),
so an unprivileged QEMU honours them as libvirt's does. On a device that is not virtio
libvirt refuses them for disks, interfaces and video and ignores them elsewhere; tapvirt
refuses them on every non-virtio device (nothing silently dropped). The QEMU properties
are in `tapvirt.qemu.argv.virtio`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from tapvirt.conf import errors as E
from tapvirt.errors import define

if TYPE_CHECKING:
    from lxml import etree

    from tapvirt.conf.xml import Reader

VIRTIO_IOMMU_TRANSITIONAL = define(
    "virtio-iommu-transitional",
    "<driver iommu='on'> on a transitional virtio device, which QEMU refuses to start",
    layer="conf",
)

# in libvirt's order (virDomainVirtioOptionsFormat)
VIRTIO_ATTRS = ("iommu", "ats", "packed", "page_per_vq")


@dataclass(frozen=True)
class VirtioOptions:
    iommu: bool | None = None  # QEMU's iommu_platform
    ats: bool | None = None  # PCIe address translation services
    packed: bool | None = None  # packed virtqueues
    page_per_vq: bool | None = None  # one notification page per queue

    def __bool__(self) -> bool:
        return self != VirtioOptions()


def parse_virtio_options(p: Reader, d: etree._Element, virtio: bool) -> VirtioOptions | None:
    """The virtio options of a `<driver>` the caller shaped (None when it has none);
    `virtio` says whether the device is a virtio device."""
    from tapvirt.conf.devices.misc import on_off

    opts = VirtioOptions(*(on_off(p, d, attr) for attr in VIRTIO_ATTRS))
    if not opts:
        return None
    if not virtio:
        attr = next(x for x in VIRTIO_ATTRS if d.get(x) is not None)
        raise p.fail(
            E.NOT_FOR_TYPE, d, f"{attr} driver option is only supported for virtio devices",
            f"remove {attr}= (or make the device virtio)", attr=attr,
        )
    return opts


def virtio_attrs(opts: VirtioOptions | None) -> str:
    """The `<driver>` attributes, in libvirt's order."""
    from tapvirt.conf.devices.misc import on_off_text
    from tapvirt.conf.xmlout import attrs

    if opts is None:
        return ""
    return attrs(iommu=on_off_text(opts.iommu), ats=on_off_text(opts.ats),
                 packed=on_off_text(opts.packed), page_per_vq=on_off_text(opts.page_per_vq))


def parse_virtio_driver(
    p: Reader, d: etree._Element | None, virtio: bool
) -> VirtioOptions | None:
    """A `<driver>` that holds nothing but virtio options (input, memballoon, rng)."""
    if d is None:
        return None
    p.shape(d, VIRTIO_ATTRS)
    return parse_virtio_options(p, d, virtio)


def virtio_driver_lines(opts: VirtioOptions | None, ind: str) -> list[str]:
    """That `<driver>` one level below `ind`, or nothing."""
    return [f"{ind}  <driver{virtio_attrs(opts)}/>"] if opts else []
