"""Error codes of the lifecycle layer (start, stop, state, supervisor)."""

from __future__ import annotations

from tapvirt.errors import define

_L = "lifecycle"

DOMAIN_NOT_FOUND = define("domain-not-found", "no domain of that name is defined", layer=_L)
