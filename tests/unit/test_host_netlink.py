"""Pure parts of the host layer: netlink message parsing, name validation, MAC helpers.
Messages are built byte by byte here the way the kernel lays them out."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tapvirt.errors import TapvirtError
from tapvirt.host import netlink as nl
from tapvirt.host.links import format_mac, parse_mac, validate_ifname


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
