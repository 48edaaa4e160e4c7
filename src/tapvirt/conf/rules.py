"""The constants and patterns of the supported XML subset, shared by the parsers.

Imports nothing of `tapvirt.conf` (every module may import it). Constants that belong
to one element live in its family module (e.g. `devices.interface.DEFAULT_MODEL`)."""

from __future__ import annotations

import re

# Names libvirt generates itself: a managed device named like this is dropped at define
# time and auto-named at start (an unmanaged one is kept).
RESERVED_PREFIXES = ("vnet", "macvtap", "macvlan")
MAX_QUEUES = 256  # the kernel's MAX_TAP_QUEUES
MTU_MIN = 68  # IPv4's minimum
MTU_MAX = 65521  # the largest MTU a tap accepts
MAX_VCPUS = 1024
MAX_BOOT_ORDER = 65535
MAX_PORT = 65535
MAX_NAME = 64
# Bytes: 2**53 KiB is far beyond any host and keeps arithmetic exact.
MAX_MEMORY_KIB = 2**53

NAME_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.+-]*\Z")
UUID_RE = re.compile(
    r"(?:[0-9a-fA-F]{32}|[0-9a-fA-F]{8}-(?:[0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12})\Z"
)
MAC_RE = re.compile(r"[0-9a-fA-F]{2}(?::[0-9a-fA-F]{2}){5}\Z")
UINT_RE = re.compile(r"[0-9]+\Z")
# Linux dev_valid_name(): 1-15 bytes, not "." or "..", no '/', ':' or white space. The
# stricter portable set below is also within libvirt's deviceName pattern.
IFNAME_RE = re.compile(r"[A-Za-z0-9_.-]{1,15}\Z")
ALIAS_RE = re.compile(r"ua-[A-Za-z0-9_.-]+\Z")
MACHINE_RE = re.compile(r"[A-Za-z0-9_.-]+\Z")
ARCHES = ("x86_64", "i686", "aarch64", "armv7l", "ppc64", "ppc64le", "riscv64", "s390x")
# The unit suffixes libvirt's virScaleInteger understands, as multipliers of a byte.
UNIT_BYTES: dict[str, int] = {"b": 1, "byte": 1, "bytes": 1}
for _i, _p in enumerate("kmgtpe", start=1):
    UNIT_BYTES[_p] = 1024**_i
    UNIT_BYTES[_p + "ib"] = 1024**_i
    UNIT_BYTES[_p + "b"] = 1000**_i


