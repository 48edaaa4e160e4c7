"""Encoding of QEMU option values: JSON objects for -device/-blockdev/-netdev (what
libvirt 9.0 passes to QEMU 7.2) and the comma doubling of QEMU's key=value syntax."""

from __future__ import annotations

import json
from typing import Any


def opt(value: str) -> str:
    """QEMU's option syntax: a comma inside a value is written twice."""
    return value.replace(",", ",,")


def jsonarg(obj: dict[str, Any]) -> str:
    return json.dumps(obj, separators=(",", ":"))
