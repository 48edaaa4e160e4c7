"""Validation of everything a caller names: devices, namespaces, MAC addresses.

tapvirt-prep runs as root on input from less privileged users, so names are checked
against a strict allow-list before they reach the kernel, a path or a log line.
"""

from __future__ import annotations

import re
import secrets

from tapvirt.errors import TapvirtError
from tapvirt.netcodes import INVALID_NAME
from tapvirt.prep.errors import BAD_REQUEST

IFNAMSIZ = 16  # including the NUL: names are at most 15 bytes
# Stricter than the kernel (which allows any byte but '/', ':' and whitespace): a name
# that is safe in a path component, a log line and a shell command someone copies.
_IFNAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,14}")
_NETNS = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}")
_MAC = re.compile(r"[0-9a-f]{2}(:[0-9a-f]{2}){5}")
MAX_MTU = 65521  # the largest MTU a tap accepts
MIN_MTU = 68


def check_ifname(name: str, *, what: str = "device name") -> str:
    if (
        not _IFNAME.fullmatch(name)
        or name in (".", "..")
        or ".." in name
        or len(name.encode()) >= IFNAMSIZ
    ):
        raise TapvirtError(
            INVALID_NAME,
            f"{what} {name!r}",
            "not a valid interface name: 1-15 characters of letters, digits, '_', '-', '.', "
            "not starting with '-' or '.', no '..', no '/', no whitespace",
            "choose a name like mytap0",
        )
    return name


def check_netns(name: str) -> str:
    if not _NETNS.fullmatch(name) or ".." in name:
        raise TapvirtError(
            INVALID_NAME,
            f"network namespace {name!r}",
            "not a valid namespace name: letters, digits, '_', '-', '.', no '/', no '..'",
            "name a namespace listed by `ip netns list`",
        )
    return name


def normalize_mac(mac: str, *, what: str = "--mac") -> str:
    low = mac.strip().lower().replace("-", ":")
    if not _MAC.fullmatch(low):
        raise TapvirtError(
            BAD_REQUEST, f"{what} {mac!r}", "not a MAC address of the form aa:bb:cc:dd:ee:ff",
            "give six hex bytes separated by ':'",
        )
    if int(low[:2], 16) & 1:
        raise TapvirtError(
            BAD_REQUEST, f"{what} {mac!r}", "a multicast MAC cannot be a device address",
            "use a unicast MAC (the lowest bit of the first byte clear), e.g. 52:54:00:12:34:56",
        )
    return low


def random_tap_mac(avoid: frozenset[str] = frozenset()) -> str:
    """A random locally administered unicast MAC with first byte 0xfe, like libvirt's.

    0xfe is the highest first byte, so a bridge (which takes the lowest port MAC as its
    own when it has none set) never adopts a tap's address; `avoid` holds guest MACs
    the tap must not carry (the kernel would drop the guest's frames as looped)."""
    while True:
        mac = "fe:" + ":".join(f"{b:02x}" for b in secrets.token_bytes(5))
        if mac not in avoid:
            return mac


def check_queues(queues: int, *, what: str = "--queues") -> int:
    if not 1 <= queues <= 256:
        raise TapvirtError(
            BAD_REQUEST, f"{what} {queues}", "the number of queues must be between 1 and 256",
            "give --queues 1 for a single-queue device",
        )
    return queues


def check_mtu(mtu: int, *, what: str = "--mtu") -> int:
    if not MIN_MTU <= mtu <= MAX_MTU:
        raise TapvirtError(
            BAD_REQUEST, f"{what} {mtu}", f"a tap's MTU must be between {MIN_MTU} and {MAX_MTU}",
            "give an MTU such as 1500",
        )
    return mtu
