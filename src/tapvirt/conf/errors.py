"""Error codes of the definition layer (XML parsing, validation, the definitions store)."""

from __future__ import annotations

from tapvirt.errors import define

_L = "conf"

XML_MALFORMED = define("xml-malformed", "the document is not well-formed XML", layer=_L)
