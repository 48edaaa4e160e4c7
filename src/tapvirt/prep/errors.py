"""Error codes of tapvirt-prep (policy decisions and privileged device creation)."""

from __future__ import annotations

from tapvirt.errors import define

_L = "prep"

POLICY_DENIED = define("policy-denied", "the policy does not allow this request", layer=_L)
