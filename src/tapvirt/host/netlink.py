"""A small stdlib rtnetlink client: RTM_GETLINK by name or index, RTM_NEWLINK, RTM_DELLINK,
a link's 64-bit counters (IFLA_STATS64) and the neighbour table (RTM_GETNEIGH).

Why not pyroute2: importing it costs ~130 ms, and the unprivileged launcher needs only a
few link attributes. A lookup here is one request and one reply (never a dump), so its
cost does not depend on how many links the namespace holds.

The socket is bound to the network namespace the process was in when it was created
(the first request); create a new `RtNetlink` after changing namespace.
"""

from __future__ import annotations

import contextlib
import errno
import itertools
import os
import socket
import struct
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field

# Message types and flags (linux/netlink.h, linux/rtnetlink.h).
NLMSG_ERROR = 2
NLMSG_DONE = 3
RTM_NEWLINK = 16
RTM_DELLINK = 17
RTM_GETLINK = 18
RTM_NEWNEIGH = 28
RTM_GETNEIGH = 30
NLM_F_REQUEST = 0x1
NLM_F_MULTI = 0x2
NLM_F_ACK = 0x4
NLM_F_EXCL = 0x200
NLM_F_DUMP = 0x300
NLM_F_CREATE = 0x400
NLM_F_CAPPED = 0x100
NLM_F_ACK_TLVS = 0x200
SOL_NETLINK = 270
NETLINK_EXT_ACK = 11
NLMSGERR_ATTR_MSG = 1

# Link attributes (linux/if_link.h).
IFLA_ADDRESS = 1
IFLA_IFNAME = 3
IFLA_MTU = 4
IFLA_LINK = 5
IFLA_MASTER = 10
IFLA_OPERSTATE = 16
IFLA_STATS64 = 23
IFLA_LINKINFO = 18
IFLA_EXT_MASK = 29
IFLA_CARRIER = 33
IFLA_LINK_NETNSID = 37
IFLA_INFO_KIND = 1
IFLA_INFO_DATA = 2
RTEXT_FILTER_SKIP_STATS = 1 << 3

IFLA_TUN_OWNER = 1
IFLA_TUN_GROUP = 2
IFLA_TUN_TYPE = 3
IFLA_TUN_PI = 4
IFLA_TUN_VNET_HDR = 5
IFLA_TUN_PERSIST = 6
IFLA_TUN_MULTI_QUEUE = 7
IFLA_TUN_NUM_QUEUES = 8
IFLA_TUN_NUM_DISABLED_QUEUES = 9
_TUN_U32 = frozenset({IFLA_TUN_OWNER, IFLA_TUN_GROUP, IFLA_TUN_NUM_QUEUES,
                      IFLA_TUN_NUM_DISABLED_QUEUES})

IFLA_MACVLAN_MODE = 1
MACVLAN_MODES = {"private": 1, "vepa": 2, "bridge": 4, "passthru": 8, "source": 16}

OPERSTATES = ("unknown", "notpresent", "down", "lowerlayerdown", "testing", "dormant", "up")

_NLMSGHDR = struct.Struct("=IHHII")  # len, type, flags, seq, pid
_IFINFOMSG = struct.Struct("=BxHiII")  # family, type, index, flags, change
_NLATTR = struct.Struct("=HH")
_NDMSG = struct.Struct("=BxxxiHBB")  # family, ifindex, state, flags, type
NDA_DST = 1
NDA_LLADDR = 2
NUD_INCOMPLETE = 0x01
NUD_FAILED = 0x20
NUD_NOARP = 0x40
# struct rtnl_link_stats64 starts with these u64 counters, in this order
STATS64_FIELDS = ("rx_packets", "tx_packets", "rx_bytes", "tx_bytes", "rx_errors",
                  "tx_errors", "rx_dropped", "tx_dropped")
_NLA_TYPE_MASK = 0x3FFF
_NLA_F_NESTED = 0x8000
_TIMEOUT = 5.0


class NetlinkError(OSError):
    """The kernel answered a request with an error (errno, plus its extended-ack text)."""

    def __init__(self, err: int, kernel_msg: str = "") -> None:
        text = os.strerror(err) + (f" ({kernel_msg})" if kernel_msg else "")
        super().__init__(err, text)
        self.kernel_msg = kernel_msg


@dataclass(slots=True)  # not frozen: construction is on the lookup's hot path
class RawLink:
    """The attributes of one RTM_NEWLINK reply that tapvirt uses, undecoded."""

    ifindex: int
    name: str
    flags: int
    mtu: int
    address: bytes
    operstate: int
    master: int | None  # ifindex of the bridge (same netns)
    link: int | None  # ifindex of the lower/peer device
    link_netnsid: int | None  # set when `link` lives in another namespace
    kind: str  # IFLA_INFO_KIND, "" when absent
    tun: dict[int, int] = field(default_factory=dict)  # IFLA_TUN_* -> value
    macvlan_mode: int | None = None
    carrier: bool | None = None  # IFLA_CARRIER, reported whether the link is up or not


def _align(n: int) -> int:
    return (n + 3) & ~3


def attr(kind: int, payload: bytes) -> bytes:
    """One netlink attribute, padded to 4 bytes."""
    length = _NLATTR.size + len(payload)
    return _NLATTR.pack(length, kind) + payload + b"\0" * (_align(length) - length)


def nested(kind: int, *attrs: bytes) -> bytes:
    return attr(kind | _NLA_F_NESTED, b"".join(attrs))


def attr_str(kind: int, text: str) -> bytes:
    return attr(kind, os.fsencode(text) + b"\0")


def attr_u32(kind: int, value: int) -> bytes:
    return attr(kind, struct.pack("=I", value))


def iter_attrs(data: bytes, offset: int = 0) -> Iterator[tuple[int, bytes]]:
    """(type, payload) of each attribute in data[offset:]; a truncated tail is ignored."""
    end = len(data)
    while offset + _NLATTR.size <= end:
        length, kind = _NLATTR.unpack_from(data, offset)
        if length < _NLATTR.size or offset + length > end:
            return
        yield kind & _NLA_TYPE_MASK, data[offset + _NLATTR.size: offset + length]
        offset += _align(length)


def _u32(payload: bytes) -> int:
    return int(struct.unpack_from("=I", payload)[0])


def _cstr(payload: bytes) -> str:
    return os.fsdecode(payload.split(b"\0", 1)[0])


# The top-level attributes parse_link() uses, with and without the NLA_F_NESTED bit.
_WANTED = frozenset(k | f for k in (IFLA_IFNAME, IFLA_MTU, IFLA_ADDRESS, IFLA_OPERSTATE,
                                    IFLA_MASTER, IFLA_LINK, IFLA_LINK_NETNSID, IFLA_LINKINFO,
                                    IFLA_CARRIER)
                    for f in (0, _NLA_F_NESTED))


def _scan(payload: bytes, offset: int, wanted: frozenset[int] | None = None
          ) -> dict[int, bytes]:
    """{type: payload} of the attributes in payload[offset:] (those in `wanted`, or all).

    This loop is most of a lookup's CPU time (a reply carries ~40 top-level
    attributes), hence a plain while loop that slices only what it keeps."""
    found: dict[int, bytes] = {}
    unpack = _NLATTR.unpack_from
    end = len(payload)
    while offset + 4 <= end:
        length, kind_id = unpack(payload, offset)
        if length < 4 or offset + length > end:
            break
        if wanted is None or kind_id in wanted:
            found[kind_id & _NLA_TYPE_MASK] = payload[offset + 4: offset + length]
        offset += (length + 3) & ~3
    return found


def parse_link(payload: bytes) -> RawLink:
    """Decode the body (ifinfomsg + attributes) of an RTM_NEWLINK message."""
    _family, _type, index, flags, _change = _IFINFOMSG.unpack_from(payload)
    found = _scan(payload, _IFINFOMSG.size, _WANTED)
    kind = ""
    tun: dict[int, int] = {}
    mode: int | None = None
    linkinfo = found.get(IFLA_LINKINFO)
    if linkinfo:
        info = _scan(linkinfo, 0)
        kind = _cstr(info.get(IFLA_INFO_KIND, b""))
        data = _scan(info.get(IFLA_INFO_DATA, b""), 0)
        if kind == "tun":
            tun = {k: _u32(v) if k in _TUN_U32 else v[0] for k, v in data.items() if v}
        elif kind in ("macvtap", "macvlan") and IFLA_MACVLAN_MODE in data:
            mode = _u32(data[IFLA_MACVLAN_MODE])
    master = found.get(IFLA_MASTER)
    link = found.get(IFLA_LINK)
    netnsid = found.get(IFLA_LINK_NETNSID)
    carrier = found.get(IFLA_CARRIER)
    mtu = found.get(IFLA_MTU)
    return RawLink(
        index, _cstr(found.get(IFLA_IFNAME, b"")), flags,
        0 if mtu is None else _u32(mtu),
        found.get(IFLA_ADDRESS, b""), (found.get(IFLA_OPERSTATE) or b"\0")[0],
        None if master is None else _u32(master),
        None if link is None else _u32(link),
        None if netnsid is None else int(struct.unpack_from("=i", netnsid)[0]),
        kind, tun, mode, None if not carrier else bool(carrier[0]))


class RtNetlink:
    """One NETLINK_ROUTE socket, reused for every request; thread-safe; lazily opened."""

    def __init__(self) -> None:
        self._sock: socket.socket | None = None
        self._seq = itertools.count(1)
        self._lock = threading.Lock()

    def _socket(self) -> socket.socket:
        if self._sock is None:
            sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC,
                                 socket.NETLINK_ROUTE)
            try:
                sock.bind((0, 0))
                sock.settimeout(_TIMEOUT)
                # Ask for the kernel's own explanation on errors (best effort).
                with contextlib.suppress(OSError):
                    sock.setsockopt(SOL_NETLINK, NETLINK_EXT_ACK, 1)
            except BaseException:
                sock.close()
                raise
            self._sock = sock
        return self._sock

    def close(self) -> None:
        with self._lock:
            if self._sock is not None:
                self._sock.close()
                self._sock = None

    def __enter__(self) -> RtNetlink:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def request(self, msg_type: int, flags: int, body: bytes) -> list[tuple[int, bytes]]:
        """Send one request; return the (type, payload) of every reply message up to the
        final one. An ack (error 0) yields no message; an error raises NetlinkError."""
        with self._lock:
            try:
                return self._request(msg_type, flags, body)
            except (TimeoutError, NetlinkError):
                raise
            except OSError:
                # A broken socket must not poison later requests: start over next time.
                if self._sock is not None:
                    self._sock.close()
                    self._sock = None
                raise

    def _request(self, msg_type: int, flags: int, body: bytes) -> list[tuple[int, bytes]]:
        sock = self._socket()
        seq = next(self._seq) & 0xFFFFFFFF
        sock.sendall(_NLMSGHDR.pack(_NLMSGHDR.size + len(body), msg_type,
                                    flags | NLM_F_REQUEST, seq, 0) + body)
        out: list[tuple[int, bytes]] = []
        while True:
            try:
                data = sock.recv(65536)
            except TimeoutError:
                # The reply may still arrive later; replies carry seq, so a stale one is
                # skipped by the next request. Drop the socket anyway to be safe.
                sock.close()
                self._sock = None
                raise
            offset = 0
            while offset + _NLMSGHDR.size <= len(data):
                length, mtype, mflags, mseq, _pid = _NLMSGHDR.unpack_from(data, offset)
                if length < _NLMSGHDR.size:
                    break
                payload = data[offset + _NLMSGHDR.size: offset + length]
                offset += _align(length)
                if mseq != seq:
                    continue  # a late reply to an earlier, abandoned request
                if mtype == NLMSG_DONE:
                    return out
                if mtype == NLMSG_ERROR:
                    err = -int(struct.unpack_from("=i", payload)[0])
                    if err == 0:
                        return out
                    raise NetlinkError(err, _ext_ack_msg(payload, mflags))
                out.append((mtype, payload))
                if not mflags & NLM_F_MULTI:
                    return out

    # -- links ------------------------------------------------------------------------

    def get_link(self, *, name: str | None = None, index: int = 0) -> RawLink | None:
        """The link with this name (or ifindex), or None if there is none."""
        body = _IFINFOMSG.pack(socket.AF_UNSPEC, 0, index, 0, 0)
        if name is not None:
            body += attr_str(IFLA_IFNAME, name)
        body += attr_u32(IFLA_EXT_MASK, RTEXT_FILTER_SKIP_STATS)
        try:
            replies = self.request(RTM_GETLINK, 0, body)
        except NetlinkError as e:
            if e.errno in (errno.ENODEV, errno.ENOENT):
                return None
            raise
        for mtype, payload in replies:
            if mtype == RTM_NEWLINK:
                return parse_link(payload)
        return None

    def link_stats(self, name: str) -> dict[str, int] | None:
        """The link's counters from IFLA_STATS64 (readable without privileges), or None
        if there is no such link."""
        body = _IFINFOMSG.pack(socket.AF_UNSPEC, 0, 0, 0, 0) + attr_str(IFLA_IFNAME, name)
        try:
            replies = self.request(RTM_GETLINK, 0, body)
        except NetlinkError as e:
            if e.errno in (errno.ENODEV, errno.ENOENT):
                return None
            raise
        for mtype, payload in replies:
            if mtype != RTM_NEWLINK:
                continue
            raw = _scan(payload, _IFINFOMSG.size, frozenset({IFLA_STATS64})).get(IFLA_STATS64)
            if raw is None or len(raw) < 8 * len(STATS64_FIELDS):
                return None
            values = struct.unpack_from(f"={len(STATS64_FIELDS)}Q", raw)
            return dict(zip(STATS64_FIELDS, values, strict=True))
        return None

    def neighbours(self) -> list[tuple[int, str, bytes]]:
        """The namespace's neighbour table (ARP and NDP) as (ifindex, IP, link-layer
        address), without incomplete or failed entries."""
        import ipaddress

        out = []
        body = _NDMSG.pack(socket.AF_UNSPEC, 0, 0, 0, 0)
        for mtype, payload in self.request(RTM_GETNEIGH, NLM_F_DUMP, body):
            if mtype != RTM_NEWNEIGH or len(payload) < _NDMSG.size:
                continue
            family, ifindex, state, _flags, _type = _NDMSG.unpack_from(payload)
            if state & (NUD_INCOMPLETE | NUD_FAILED | NUD_NOARP):
                continue
            found = _scan(payload, _NDMSG.size)
            dst, lladdr = found.get(NDA_DST), found.get(NDA_LLADDR)
            if not dst or not lladdr or family not in (socket.AF_INET, socket.AF_INET6):
                continue
            out.append((ifindex, str(ipaddress.ip_address(dst)), lladdr))
        return out

    def new_link(self, *, index: int = 0, attrs: bytes = b"", flags: int = 0,
                 change: int = 0, create: bool = False) -> None:
        """RTM_NEWLINK: create a link (`create`, fails with EEXIST if the name is taken)
        or change an existing one (`index`); waits for the kernel's ack."""
        nl_flags = NLM_F_ACK | (NLM_F_CREATE | NLM_F_EXCL if create else 0)
        body = _IFINFOMSG.pack(socket.AF_UNSPEC, 0, index, flags, change) + attrs
        self.request(RTM_NEWLINK, nl_flags, body)

    def del_link(self, *, index: int = 0, name: str | None = None) -> None:
        body = _IFINFOMSG.pack(socket.AF_UNSPEC, 0, index, 0, 0)
        if name is not None:
            body += attr_str(IFLA_IFNAME, name)
        self.request(RTM_DELLINK, NLM_F_ACK, body)


def _ext_ack_msg(payload: bytes, flags: int) -> str:
    """The NLMSGERR_ATTR_MSG text of an error message, if the kernel sent one."""
    if not flags & NLM_F_ACK_TLVS or len(payload) < 4 + _NLMSGHDR.size:
        return ""
    orig_len = _NLMSGHDR.unpack_from(payload, 4)[0]
    offset = 4 + (_NLMSGHDR.size if flags & NLM_F_CAPPED else _align(orig_len))
    for kind, value in iter_attrs(payload, offset):
        if kind == NLMSGERR_ATTR_MSG:
            return _cstr(value)
    return ""
