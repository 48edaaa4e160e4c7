"""`<seclabel>`: the security driver's label for QEMU and its files.

tapvirt has no security driver (QEMU runs as the user, with no capability), so:
`type='none'` is accepted (it says exactly that); `type='dynamic'` without a model is
accepted with a warning (libvirt would pick the host's driver, e.g. SELinux, and label
QEMU); any label of the selinux, apparmor or dac model is refused by name: tapvirt cannot
apply it, and running without it would silently weaken what the document asks for."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING

from tapvirt.conf import decl
from tapvirt.conf import errors as E
from tapvirt.conf.xmlout import Writer

if TYPE_CHECKING:
    from lxml import etree

    from tapvirt.conf.xml import Reader


class SeclabelType(StrEnum):
    NONE = "none"
    DYNAMIC = "dynamic"


@dataclass(frozen=True)
class Seclabel:
    type: SeclabelType = decl.enum("@type", SeclabelType, required=True)
    relabel: bool | None = decl.yesno("@relabel")


def parse_seclabel(r: Reader, el: etree._Element) -> Seclabel:
    model = el.get("model")
    if model not in (None, "none") or el.get("type") == "static":
        what = f"model '{model[:20]}'" if model is not None else "a static label"
        raise r.fail(
            E.SECLABEL_UNSUPPORTED, el,
            f"<seclabel> with {what}: tapvirt has no security driver, so it cannot label "
            "QEMU (it runs QEMU as you, without any capability)",
            "remove the <seclabel>, or write <seclabel type='none'/> to say the guest runs "
            "unconfined; confine the tapvirt process itself (e.g. run it under an AppArmor "
            "profile) if you need that",
        )
    # model='none' (what libvirt writes for type none) says no more than its absence
    values, _ = decl.read_fields(r, el, Seclabel, extra_attrs=("model",))
    sl = Seclabel(**values)
    if sl.type is SeclabelType.DYNAMIC and sl.relabel is False:
        raise r.fail(E.INVALID_VALUE, el, "dynamic label type must use resource relabeling",
                     "remove relabel='no'", attr="relabel")
    return sl


def format_seclabel(sl: Seclabel, w: Writer) -> None:
    decl.write(sl, "seclabel", w, 1)
