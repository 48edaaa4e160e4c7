"""Every check code, on a fake host: the code, the device it names, and the fix."""

from __future__ import annotations

from typing import Any

import pytest

from tapvirt.conf.devices.netsocket import SocketSource
from tapvirt.conf.model import Driver, DriverName, Interface, InterfaceType, LinkState, NicModel
from tapvirt.qemu.connect import check_domain
from tests.unit.qemu.helpers import bridge, direct, domain, host, managed, tap, tap_link, user

ROOT = {"uid": 0, "gids": [0], "net_admin": True, "user": "root"}


def sock(itype: InterfaceType, address: str | None, local: str | None = None) -> Interface:
    return Interface(itype, "52:54:00:11:11:11", alias="net0", source=SocketSource(
        address, 5558, local, None if local is None else 5559))


# (name, interface, host description, expected code, fragments of message and fix)
CASES: list[tuple[str, Interface, dict[str, Any], str, tuple[str, ...]]] = [
    ("missing", tap(), {}, "device-missing",
     ("device mytap0 does not exist", "ip tuntap add mode tap user alice name mytap0")),
    ("missing-mq-fix", tap(queues=4), {}, "device-missing", ("user alice multi_queue name",)),
    ("bridge-as-tap", tap("br0"), {"links": [{"name": "br0", "kind": "bridge"}]},
     "device-wrong-kind", ("br0 is a bridge", "<source bridge='br0'/>")),
    ("veth", tap("ve0"), {"links": [{"name": "ve0", "kind": "veth"}]},
     "device-wrong-kind", ("ve0 is a veth", "ip link del ve0")),
    ("tun-mode", tap("tun0"), {"links": [{"name": "tun0", "kind": "tun"}]},
     "device-wrong-kind", ("TUN (layer 3) mode",)),
    ("foreign-owner", tap(), {"links": [tap_link(tun={"owner": 2000})]},
     "device-foreign-owner", ("belongs to uid 2000", "ip link del mytap0")),
    ("foreign-group", tap(), {"links": [tap_link(tun={"owner": None, "group": 3000})]},
     "device-foreign-owner", ("group 3000",)),
    ("mq-tap-single-queue", tap(), {"links": [tap_link(tun={"multi_queue": True})]},
     "queues-mismatch", ("is multi_queue but the interface asks for 1 queue",)),
    ("single-tap-mq-guest", tap(queues=4), {"links": [tap_link()]},
     "queues-mismatch", ("single-queue but <driver queues='4'/>", "multi_queue name mytap0")),
    ("busy-holder", tap(), {"links": [tap_link(tun={"num_queues": 1})],
                            "holders": {"mytap0": [4242]}},
     "device-busy", ("already attached by process 4242",)),
    ("server-not-local", sock(InterfaceType.SERVER, "192.168.0.1"), {}, "address-not-local",
     ("bind its socket to 192.168.0.1", "127.0.0.1")),
    ("udp-local-not-local", sock(InterfaceType.UDP, "127.0.0.1", "192.168.10.1"),
     {"addresses": ["127.0.0.1", "10.0.0.2"]}, "address-not-local", ("192.168.10.1",)),
    ("busy-invisible", tap(), {"links": [tap_link(tun={"num_queues": 1})]},
     "device-busy", ("not visible to us",)),
    ("busy-carrier", tap(), {"links": [tap_link(flags=0x10000)]},
     "device-busy", ("not visible to us",)),
    # A DOWN single-queue tap still reports its attached queue (derived from the carrier).
    ("busy-down-holder", tap(), {"links": [tap_link(up=False, tun={"num_queues": 1})],
                                 "holders": {"mytap0": [77]}},
     "device-busy", ("process 77",)),
    ("down", tap(), {"links": [tap_link(up=False)]},
     "device-down", ("administratively down", "ip link set mytap0 up")),
    ("mac-conflict", tap(), {"links": [tap_link(mac="52:54:00:11:11:11")]},
     "mac-conflict", ("guest's own MAC", "ip link set mytap0 address fe:54:00:11:11:11")),
    ("mtu-too-large", tap(mtu=9000), {"links": [tap_link()]},
     "mtu-too-large", ("guest MTU 9000 is above the MTU 1500", "mtu 9000")),
    ("tun-node-missing", tap(), {"links": [tap_link()], "nodes": {"/dev/net/tun": None}},
     "tun-node-inaccessible", ("does not exist", "--tun-node")),
    ("tun-node-0600", tap(), {"links": [tap_link()],
                              "nodes": {"/dev/net/tun": {"uid": 0, "rw": False}}},
     "tun-node-inaccessible", ("is not readable and writable by uid 1000",)),
    ("tun-node-wrong-dev", tap(), {"links": [tap_link()],
                                   "nodes": {"/dev/net/tun": {"rdev": [1, 3]}}},
     "tun-node-inaccessible", ("not the tun clone device 10:200 (1:3)",)),
    ("macvtap-mac-mismatch", tap("mv0"),
     {"links": [{"name": "mv0", "kind": "macvtap", "ifindex": 5, "mac": "52:54:00:aa:aa:aa"}]},
     "mac-mismatch", ("has MAC 52:54:00:aa:aa:aa", "ip link set mv0 address 52:54:00:11:11:11")),
    ("macvtap-node-missing", tap("mv0"),
     {"links": [{"name": "mv0", "kind": "macvtap", "ifindex": 5, "mac": "52:54:00:11:11:11"}],
      "nodes": {"/dev/tap5": None}},
     "macvtap-node-missing", ("/dev/tap5", "mknod /dev/tap5")),
    ("macvtap-node-collision", tap("mv0"),
     {"links": [{"name": "mv0", "kind": "macvtap", "ifindex": 5, "mac": "52:54:00:11:11:11"}],
      "nodes": {"/dev/tap5": {"rdev": [246, 9]}}},
     "macvtap-node-foreign", ("another device (246:9, expected 246:5)",)),
    ("macvtap-node-owner", tap("mv0"),
     {"links": [{"name": "mv0", "kind": "macvtap", "ifindex": 5, "mac": "52:54:00:11:11:11"}],
      "nodes": {"/dev/tap5": {"rdev": [246, 5], "uid": 0, "rw": False}}},
     "macvtap-node-foreign", ("not readable and writable", "chown alice /dev/tap5")),
    ("managed-unprivileged", managed(), {}, "managed-needs-privilege",
     ("needs CAP_NET_ADMIN", "managed='no'")),
    ("direct-unprivileged", direct(), {"links": [{"name": "lower0", "kind": "veth"}]},
     "managed-needs-privilege", ("macvtap on lower0", "type macvtap mode bridge")),
    ("invalid-name", tap("much-too-long-name0"), {}, "invalid-name", ("at most 15",)),
    ("invalid-name-slash", tap("a/b"), {}, "invalid-name", ("contains '/'",)),
    ("bridge-missing", bridge(), {}, "bridge-missing",
     ("bridge br0 does not exist", "ip link add br0 type bridge")),
    ("bridge-not-bridge", bridge("ve0"), {"links": [{"name": "ve0", "kind": "veth"}]},
     "device-wrong-kind", ("ve0 is a veth, not a bridge",)),
    ("bridge-helper-mq", bridge(driver=Driver(queues=2)),
     {"links": [{"name": "br0", "kind": "bridge"}]}, "queues-mismatch",
     ("qemu-bridge-helper, which gives one queue",)),
    ("source-dev-missing", direct(), {"identity": ROOT}, "source-dev-missing",
     ("source device lower0 does not exist",)),
    ("managed-exists", managed("mytap0"), {"identity": ROOT, "links": [tap_link()]},
     "device-exists", ("The mytap0 interface already exists", "managed='no'")),
    ("vhost-unavailable", tap(driver=Driver(name=DriverName.VHOST)), {"links": [tap_link()]},
     "vhost-unavailable", ("<driver name='vhost'>",)),
]


@pytest.mark.parametrize(("name", "iface", "desc", "code", "fragments"), CASES,
                         ids=[c[0] for c in CASES])
def test_check_reports_code(name: str, iface: Interface, desc: dict[str, Any], code: str,
                            fragments: tuple[str, ...]) -> None:
    fake = host(**desc)
    (report,) = check_domain(domain(iface), fake, user="alice")
    codes = [f.code.code for f in report.findings]
    assert code in codes, codes
    finding = report.findings[codes.index(code)]
    text = finding.message + "\n" + finding.fix
    for fragment in fragments:
        assert fragment in text
    assert finding.message.startswith("interface net0 (")
    assert report.verdict == ("warning" if code == "device-down" else "error")
    # read-only: nothing opened, created or changed
    assert not fake.opened and not fake.created and not fake.changes


GOOD: list[tuple[str, Interface, dict[str, Any]]] = [
    ("owned-tap", tap(), {"links": [tap_link()]}),
    ("group-tap", tap(), {"links": [tap_link(tun={"owner": None, "group": 1000})]}),
    ("other-owner-our-group", tap(), {"identity": {"uid": 1000, "gids": [1000, 3000]},
                                      "links": [tap_link(tun={"owner": 2000, "group": 3000})]}),
    ("mq-tap", tap(queues=4), {"links": [tap_link(tun={"multi_queue": True, "num_queues": 2})]}),
    ("macvtap", tap("mv0"),
     {"links": [{"name": "mv0", "kind": "macvtap", "ifindex": 5, "mac": "52:54:00:11:11:11"}]}),
    ("user", user(link_state=LinkState.DOWN), {}),
    # a client connects out and a server without address binds every address: no check;
    # an mcast group is joined, not bound to; udp's peer is remote
    ("client", sock(InterfaceType.CLIENT, "192.168.0.1"), {}),
    ("server-any", sock(InterfaceType.SERVER, None), {}),
    ("server-local", sock(InterfaceType.SERVER, "10.0.0.2"), {"addresses": ["10.0.0.2"]}),
    ("mcast", sock(InterfaceType.MCAST, "230.0.0.1"), {}),
    ("udp", sock(InterfaceType.UDP, "192.168.10.1", "127.0.0.1"), {}),
    ("managed-root", managed(model=NicModel.E1000), {"identity": ROOT}),
    ("bridge-root", bridge(), {"identity": ROOT, "links": [{"name": "br0", "kind": "bridge"}]}),
    ("bridge-helper", bridge(), {"links": [{"name": "br0", "kind": "bridge"}]}),
    ("direct-root", direct(), {"identity": ROOT, "links": [{"name": "lower0", "kind": "veth"}]}),
]


@pytest.mark.parametrize(("name", "iface", "desc"), GOOD, ids=[g[0] for g in GOOD])
def test_good_interfaces_have_no_findings(name: str, iface: Interface,
                                          desc: dict[str, Any]) -> None:
    (report,) = check_domain(domain(iface), host(**desc), user="alice")
    assert report.findings == () and report.verdict == "ok"


def test_all_problems_of_one_interface_are_reported() -> None:
    desc = {"links": [tap_link(up=False, mac="52:54:00:11:11:11", tun={"owner": 2000})]}
    (report,) = check_domain(domain(tap(mtu=9000)), host(**desc), user="alice")
    assert [f.code.code for f in report.findings] == [
        "device-foreign-owner", "mac-conflict", "mtu-too-large", "device-down"]
    assert report.first_error() is report.findings[0]


def test_net_admin_may_attach_foreign_tap() -> None:
    desc = {"identity": ROOT, "links": [tap_link(tun={"owner": 2000})]}
    (report,) = check_domain(domain(tap()), host(**desc), user="root")
    assert report.verdict == "ok"


def test_linux_host_knows_its_addresses() -> None:
    from tapvirt.host.linux import LinuxHost

    # a bind to port 0 of the address: nothing listens, nothing is sent
    assert LinuxHost().address_is_local("127.0.0.1")
    assert not LinuxHost().address_is_local("192.0.2.1")  # TEST-NET-1, never assigned here
