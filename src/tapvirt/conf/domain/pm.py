"""`<pm>`: whether the guest may suspend to RAM (S3) or to disk (S4).

QEMU: `-global PIIX4_PM.disable_s3=1` (ICH9-LPC on q35), as libvirt 9.0 writes it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from tapvirt.conf import decl
from tapvirt.conf.xmlout import Writer

if TYPE_CHECKING:
    from lxml import etree

    from tapvirt.conf.xml import Reader


@dataclass(frozen=True)
class Pm:
    suspend_to_mem: bool | None = decl.yesno("suspend-to-mem/@enabled", required=True)
    suspend_to_disk: bool | None = decl.yesno("suspend-to-disk/@enabled", required=True)


def parse_pm(r: Reader, el: etree._Element) -> Pm:
    return decl.read(r, el, Pm)


def format_pm(pm: Pm, w: Writer) -> None:
    decl.write(pm, "pm", w, 1)
