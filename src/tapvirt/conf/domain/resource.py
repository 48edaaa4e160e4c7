"""`<resource>`: the cgroup partition libvirt puts the guest into. Valid, kept, and of no
effect for an unprivileged tapvirt (it creates no cgroups): a warning says so."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

from tapvirt.conf import decl
from tapvirt.conf.xmlout import Writer

if TYPE_CHECKING:
    from lxml import etree

    from tapvirt.conf.xml import Reader


@dataclass(frozen=True)
class Resource:
    partition: str | None = decl.string(
        "partition/text()", pattern=re.compile(r"/[A-Za-z0-9_.\-/]{0,255}\Z"),
        fix="write an absolute cgroup path such as /machine",
    )


def parse_resource(r: Reader, el: etree._Element) -> Resource:
    return decl.read(r, el, Resource)


def format_resource(res: Resource, w: Writer) -> None:
    decl.write(res, "resource", w, 1)
