"""Writing canonical XML: indentation, escaping (done once, here) and attribute lists.

libvirt's `virsh dumpxml` style: two spaces per level, attributes in single quotes."""

from __future__ import annotations

from collections.abc import Callable

__all__ = ["IND", "Writer", "a", "attrs", "t"]

IND = "  "
Writer = Callable[[str], None]  # the `append` of the output lines

_TEXT = str.maketrans({"&": "&amp;", "<": "&lt;", ">": "&gt;", "\r": "&#13;"})
_ATTR = str.maketrans({
    "&": "&amp;", "<": "&lt;", ">": "&gt;", "'": "&apos;", "\n": "&#10;", "\r": "&#13;",
    "\t": "&#9;",
})


def t(text: str) -> str:
    """Escaped element text."""
    return text.translate(_TEXT)


def a(value: str) -> str:
    """An escaped, quoted attribute value."""
    return "'" + str(value).translate(_ATTR) + "'"


def attrs(**values: str | None) -> str:
    """` k='v'` for every value that is not None, in the order given."""
    return "".join(f" {k}={a(v)}" for k, v in values.items() if v is not None)
