"""Error codes of the lifecycle layer (start, stop, state, supervisor)."""

from __future__ import annotations

from tapvirt.errors import define

_L = "lifecycle"

DOMAIN_NOT_FOUND = define("domain-not-found", "no domain of that name is defined", layer=_L)

# The definitions store (tapvirt.domains.store).
DOMAIN_NAME_TAKEN = define(
    "domain-name-taken",
    "a domain of that name is already defined with another uuid",
    layer=_L,
)
DOMAIN_UUID_TAKEN = define(
    "domain-uuid-taken", "another domain is already defined with that uuid", layer=_L
)
STORE_UNUSABLE = define(
    "store-unusable",
    "the definitions directory cannot be created, secured or written",
    layer=_L,
)
STORE_CORRUPT = define(
    "store-corrupt", "a stored definition cannot be read back (edited or damaged)", layer=_L
)
