"""tapvirt's RelaxNG subset of libvirt's domain schema, applied with lxml.

The parser's own structure checks run first because they name the element or attribute,
its line and the fix precisely (libxml2's RelaxNG messages say "Element interface failed
to validate attributes" and point at the next element for a missing one). This grammar
then runs as a safety net: a document the hand checks accept but the grammar rejects is
reported as `schema-invalid` (the fuzz tests make sure that never happens) — and the
grammar documents the subset in one machine-checkable place.
"""

from __future__ import annotations

from functools import cache
from importlib import resources
from typing import TYPE_CHECKING

from tapvirt.conf import errors as E
from tapvirt.errors import TapvirtError

if TYPE_CHECKING:
    from lxml import etree


@cache
def _grammar() -> etree.RelaxNG:
    from lxml import etree

    data = resources.files(__package__).joinpath("domain.rng").read_bytes()
    return etree.RelaxNG(etree.fromstring(data))


def check(root: etree._Element, source: str) -> None:
    """Validate a parsed document against the subset grammar."""
    grammar = _grammar()
    if grammar.validate(root):
        return
    entry = grammar.error_log.last_error
    line = entry.line if entry is not None and entry.line > 0 else None
    msg = entry.message if entry is not None else "the document does not match"
    path = entry.path if entry is not None and entry.path else source
    raise TapvirtError(
        E.SCHEMA_INVALID, path, f"{msg} (tapvirt's RelaxNG subset of libvirt's schema)",
        "compare with docs/domain-xml.md; please report it: the parser should have "
        "named the problem precisely", line=line, details={"source": source},
    )
