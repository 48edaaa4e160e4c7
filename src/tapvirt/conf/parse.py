"""libvirt domain XML -> `tapvirt.conf.model.Domain`: the public entry points.

The steps: `tapvirt.conf.xml.load` (well-formed, safe XML); one walk over the tree
(`tapvirt.conf.domain`, which hands `<devices>` to the family modules in
`tapvirt.conf.devices`) that checks, element by element, with errors that name the element
or attribute, its line and the fix:

* structure: every element and attribute outside the supported subset is rejected
  (never silently dropped), required parts must be present, values well-formed;
* libvirt's semantic rules: the managed tristate, reserved-prefix blanking, unicast
  MACs, queue/MTU ranges, aliases, boot orders, generated MACs and uuid.

Then the post-parse step (`tapvirt.conf.defaults`: libvirt's defaults and implicit
devices), then the RelaxNG subset in `schema/domain.rng` runs as a safety net
(`tapvirt.conf.schema`).

Randomness (generated MACs and uuid) comes from `rand`, so that tests can seed it.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

from tapvirt.conf.defaults import apply_defaults
from tapvirt.conf.domain.root import parse_domain_element
from tapvirt.conf.model import Domain
from tapvirt.conf.xml import Reader, load
from tapvirt.errors import FILE_UNREADABLE, TapvirtError

__all__ = [
    "Parsed",
    "parse_document",
    "parse_domain",
    "parse_domain_file",
]


@dataclass(frozen=True)
class Parsed:
    """A parsed domain plus what the parser filled in (the store needs to know)."""

    domain: Domain
    uuid_generated: bool
    generated_macs: tuple[str, ...] = ()


def parse_domain(
    text: str, *, source: str = "<string>", rand: random.Random | None = None
) -> Domain:
    """Parse and validate libvirt domain XML; raise `TapvirtError` on any problem."""
    return parse_document(text, source=source, rand=rand).domain


def parse_domain_file(path: str | Path, *, rand: random.Random | None = None,
                      live: bool = False) -> Domain:
    """Read and parse a domain XML file (its own encoding declaration is honoured).
    live: the file is a running guest's live XML (the aliases tapvirt assigned may have
    gaps after hotplug and unplug: net0, net2)."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise TapvirtError(
            FILE_UNREADABLE, str(path), f"cannot read the file: {exc.strerror or exc}",
            "check the path and its permissions",
        ) from None
    return parse_document(data, source=str(path), rand=rand, live=live).domain


def parse_document(
    data: str | bytes, *, source: str = "<string>", rand: random.Random | None = None,
    live: bool = False,
) -> Parsed:
    """Parse `data` (text, or bytes in the encoding they declare) into a `Parsed`."""
    root = load(data, source)
    reader = Reader(root, source, rand if rand is not None else random.SystemRandom())
    reader.live = live
    dom = apply_defaults(parse_domain_element(reader))
    from tapvirt.conf import schema

    schema.check(root, source)
    return Parsed(dom, reader.uuid_generated, tuple(reader.generated_macs))
