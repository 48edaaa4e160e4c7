"""Pure parts of the host layer: netlink message parsing, name validation, MAC helpers.
Messages are built byte by byte here the way the kernel lays them out."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tapvirt.errors import TapvirtError
from tapvirt.host import netlink as nl
from tapvirt.host.links import format_mac, parse_mac, tun_info, validate_ifname


def _ifinfo(index: int, flags: int) -> bytes:
    return struct.pack("=BxHiII", 0, 1, index, flags, 0)


def _u8(kind: int, v: int) -> bytes:
    return nl.attr(kind, bytes([v]))


def test_parse_tap_reply() -> None:
    tun_data = b"".join([
        _u8(nl.IFLA_TUN_TYPE, 2), nl.attr_u32(nl.IFLA_TUN_OWNER, 1001),
        _u8(nl.IFLA_TUN_PI, 0), _u8(nl.IFLA_TUN_VNET_HDR, 1), _u8(nl.IFLA_TUN_PERSIST, 1),
        _u8(nl.IFLA_TUN_MULTI_QUEUE, 1), nl.attr_u32(nl.IFLA_TUN_NUM_QUEUES, 3),
        nl.attr_u32(nl.IFLA_TUN_NUM_DISABLED_QUEUES, 1),
    ])
    payload = _ifinfo(7, 0x1003) + b"".join([
        nl.attr_str(nl.IFLA_IFNAME, "mytap0"),
        nl.attr_u32(13, 1000),  # IFLA_TXQLEN: ignored
        _u8(nl.IFLA_OPERSTATE, 6),
        nl.attr_u32(nl.IFLA_MTU, 9000),
        nl.attr_u32(nl.IFLA_MASTER, 3),
        nl.attr(nl.IFLA_ADDRESS, bytes.fromhex("fe5400123456")),
        nl.nested(nl.IFLA_LINKINFO, nl.attr_str(nl.IFLA_INFO_KIND, "tun"),
                  nl.nested(nl.IFLA_INFO_DATA, tun_data)),
        nl.nested(26, nl.attr(1, b"\0" * 40)),  # IFLA_AF_SPEC: ignored
    ])
    raw = nl.parse_link(payload)
    assert (raw.ifindex, raw.name, raw.flags, raw.mtu, raw.operstate) == (
        7, "mytap0", 0x1003, 9000, 6)
    assert raw.master == 3 and raw.link is None and raw.link_netnsid is None
    assert format_mac(raw.address) == "fe:54:00:12:34:56"
    assert raw.kind == "tun"
    assert raw.tun == {nl.IFLA_TUN_TYPE: 2, nl.IFLA_TUN_OWNER: 1001, nl.IFLA_TUN_PI: 0,
                       nl.IFLA_TUN_VNET_HDR: 1, nl.IFLA_TUN_PERSIST: 1,
                       nl.IFLA_TUN_MULTI_QUEUE: 1, nl.IFLA_TUN_NUM_QUEUES: 3,
                       nl.IFLA_TUN_NUM_DISABLED_QUEUES: 1}


def test_parse_macvtap_with_foreign_lower() -> None:
    payload = _ifinfo(9, 0x1002) + b"".join([
        nl.attr_str(nl.IFLA_IFNAME, "mvt0"),
        nl.attr_u32(nl.IFLA_LINK, 4),
        nl.attr(nl.IFLA_LINK_NETNSID, struct.pack("=i", 0)),
        nl.nested(nl.IFLA_LINKINFO, nl.attr_str(nl.IFLA_INFO_KIND, "macvtap"),
                  nl.nested(nl.IFLA_INFO_DATA, nl.attr_u32(nl.IFLA_MACVLAN_MODE, 4))),
    ])
    raw = nl.parse_link(payload)
    assert (raw.kind, raw.macvlan_mode, raw.link, raw.link_netnsid) == ("macvtap", 4, 4, 0)
    assert raw.tun == {} and raw.address == b"" and raw.mtu == 0


def test_truncated_attribute_is_ignored() -> None:
    good = nl.attr_str(nl.IFLA_IFNAME, "x")
    broken = struct.pack("=HH", 200, nl.IFLA_MTU) + b"\0" * 4  # claims more than is there
    assert list(nl.iter_attrs(good + broken)) == [(nl.IFLA_IFNAME, b"x\0")]
    raw = nl.parse_link(_ifinfo(1, 0) + good + broken)
    assert raw.name == "x" and raw.mtu == 0


def test_ext_ack_message_is_extracted() -> None:
    orig = struct.pack("=IHHII", 40, nl.RTM_NEWLINK, 5, 9, 0)
    payload = (struct.pack("=i", -95) + orig
               + nl.attr_str(nl.NLMSGERR_ATTR_MSG, "Unknown device type"))
    assert nl._ext_ack_msg(payload, nl.NLM_F_ACK_TLVS | nl.NLM_F_CAPPED) == (
        "Unknown device type")
    assert nl._ext_ack_msg(payload, 0) == ""
    err = nl.NetlinkError(95, "Unknown device type")
    assert err.errno == 95 and "Unknown device type" in str(err)


@pytest.mark.parametrize("name", ["", "x" * 16, ".", "..", "a/b", "a:b", "a b", "tab\t"])
def test_invalid_names(name: str) -> None:
    with pytest.raises(TapvirtError) as e:
        validate_ifname(name)
    assert e.value.code.code == "invalid-name"
    assert e.value.fix


@pytest.mark.parametrize("name", ["tap0", "x" * 15, "vnet-1_2", "mytap.100"])
def test_valid_names(name: str) -> None:
    validate_ifname(name)


@given(st.binary(min_size=6, max_size=6))
def test_mac_round_trip(b: bytes) -> None:
    assert parse_mac(format_mac(b)) == b


def test_bad_mac() -> None:
    with pytest.raises(ValueError):
        parse_mac("52:54:00:12:34")


class _FakeSock:
    """Stands in for the kernel side of a netlink socket: replays datagrams, records sends."""

    def __init__(self, datagrams: list[bytes]) -> None:
        self.datagrams = datagrams
        self.sent: list[bytes] = []

    def sendall(self, data: bytes) -> None:
        self.sent.append(data)

    def recv(self, size: int) -> bytes:
        return self.datagrams.pop(0)

    def close(self) -> None:
        pass


def _msg(mtype: int, flags: int, seq: int, payload: bytes) -> bytes:
    return struct.pack("=IHHII", 16 + len(payload), mtype, flags, seq, 0) + payload


def _link_payload(index: int, name: str) -> bytes:
    return _ifinfo(index, 0) + nl.attr_str(nl.IFLA_IFNAME, name)


def _client(datagrams: list[bytes]) -> tuple[nl.RtNetlink, _FakeSock]:
    client = nl.RtNetlink()
    sock = _FakeSock(datagrams)
    client._sock = sock  # type: ignore[assignment]
    return client, sock


def test_stale_replies_are_skipped_and_multipart_is_joined() -> None:
    multi = nl.NLM_F_MULTI
    client, sock = _client([
        # a late reply to an abandoned request (seq 77), then ours in two datagrams
        _msg(nl.RTM_NEWLINK, 0, 77, _link_payload(9, "stale"))
        + _msg(nl.RTM_NEWLINK, multi, 1, _link_payload(1, "a")),
        _msg(nl.RTM_NEWLINK, multi, 1, _link_payload(2, "b"))
        + _msg(nl.NLMSG_DONE, multi, 1, struct.pack("=i", 0)),
    ])
    replies = client.request(nl.RTM_GETLINK, 0, _ifinfo(0, 0))
    assert [nl.parse_link(p).name for _, p in replies] == ["a", "b"]
    hdr = struct.unpack_from("=IHHII", sock.sent[0])
    assert hdr[1] == nl.RTM_GETLINK and hdr[2] & nl.NLM_F_REQUEST and hdr[3] == 1


def test_errors_and_acks() -> None:
    err = struct.pack("=i", -19) + struct.pack("=IHHII", 16, nl.RTM_GETLINK, 1, 1, 0)
    ack = struct.pack("=i", 0) + struct.pack("=IHHII", 16, nl.RTM_NEWLINK, 5, 2, 0)
    eperm = struct.pack("=i", -1) + struct.pack("=IHHII", 16, nl.RTM_DELLINK, 5, 3, 0)
    client, _ = _client([_msg(nl.NLMSG_ERROR, 0, 1, err), _msg(nl.NLMSG_ERROR, 0, 2, ack),
                         _msg(nl.NLMSG_ERROR, 0, 3, eperm)])
    assert client.get_link(name="nosuch") is None  # ENODEV: not found
    client.new_link(index=5, flags=1, change=1)  # acked: returns
    with pytest.raises(nl.NetlinkError) as e:
        client.del_link(name="x")
    assert e.value.errno == 1


@pytest.mark.parametrize(("attrs", "carrier", "queues"), [
    ({nl.IFLA_TUN_MULTI_QUEUE: 0}, True, 1),  # single-queue, attached: carrier on
    ({nl.IFLA_TUN_MULTI_QUEUE: 0}, False, 0),
    ({nl.IFLA_TUN_MULTI_QUEUE: 0}, None, 0),
    ({nl.IFLA_TUN_MULTI_QUEUE: 1, nl.IFLA_TUN_NUM_QUEUES: 3}, True, 3),  # the kernel's count
    ({nl.IFLA_TUN_MULTI_QUEUE: 1, nl.IFLA_TUN_NUM_QUEUES: 0}, True, 0),
])
def test_queue_count_of_single_queue_taps_comes_from_carrier(
        attrs: dict[int, int], carrier: bool | None, queues: int) -> None:
    assert tun_info(attrs, carrier).num_queues == queues


def test_carrier_is_parsed() -> None:
    raw = nl.parse_link(_ifinfo(3, 0) + _u8(nl.IFLA_CARRIER, 1))
    assert raw.carrier is True
    assert nl.parse_link(_ifinfo(3, 0)).carrier is None
