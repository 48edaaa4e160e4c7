"""connect_domain on a fake host: what is opened, with which flags, and the rollback."""

from __future__ import annotations

import pytest

from tapvirt.conf.model import Driver, DriverName, LinkState, NicModel
from tapvirt.errors import TapvirtError
from tapvirt.qemu.argv import build_argv
from tapvirt.qemu.connect import connect_domain, plan_domain
from tests.unit.qemu.helpers import bridge, direct, domain, host, managed, tap, tap_link, user

ROOT = {"uid": 0, "gids": [0], "net_admin": True, "user": "root"}


def test_unmanaged_tap_attaches_without_changing_it() -> None:
    fake = host(links=[tap_link(tun={"multi_queue": True}, mtu=9000)])
    conn = connect_domain(domain(tap(queues=4)), fake, tun_node="/dev/net/tun")
    (b,) = conn.backends
    assert (b.device, len(b.fds), b.host_mtu) == ("mytap0", 4, 9000)
    (op,) = fake.opened
    assert (op.op, op.device, op.vnet_hdr, op.queues) == ("open_tap", "mytap0", True, 4)
    assert not fake.created and not fake.changes
    conn.close()
    assert not fake.open_fds and fake.closed_fds == [3, 4, 5, 6]
    assert "mytap0" in fake.links  # an unmanaged device is never deleted


@pytest.mark.parametrize(("model", "vnet_hdr"), [
    (NicModel.VIRTIO, True), (NicModel.E1000E, True), (NicModel.E1000, False),
    (NicModel.RTL8139, False)])
def test_vnet_hdr_follows_the_model(model: NicModel, vnet_hdr: bool) -> None:
    fake = host(links=[tap_link()])
    connect_domain(domain(tap(model=model)), fake).close()
    assert fake.opened[0].vnet_hdr is vnet_hdr


def test_private_tun_node_and_backend_tap_override() -> None:
    nodes = {"/tmp/mytun": {"uid": 1000}, "/tmp/other": {"uid": 1000}}
    fake = host(links=[tap_link(), tap_link("tap1")], nodes=nodes)
    dom = domain(tap(), tap("tap1", "52:54:00:11:11:12", backend_tap="/tmp/other"))
    connect_domain(dom, fake, tun_node="/tmp/mytun").close()
    assert [o.node for o in fake.opened] == ["/tmp/mytun", "/tmp/other"]


def test_macvtap_is_opened_through_its_node() -> None:
    fake = host(links=[{"name": "mv0", "kind": "macvtap", "ifindex": 7,
                        "mac": "52:54:00:11:11:11", "mtu": 1400}])
    conn = connect_domain(domain(tap("mv0", queues=2)), fake)
    (op,) = fake.opened
    assert (op.op, op.node, op.queues) == ("open_macvtap", "/dev/tap7", 2)
    assert conn.backends[0].host_mtu == 1400  # inherited: not the default 1500
    conn.close()


def test_managed_tap_gets_fe_mac_and_vanishes_with_its_fds() -> None:
    fake = host(identity=ROOT)
    dom = domain(managed(mtu=1400, model=NicModel.E1000),
                 managed("tapx", mac="fe:00:00:00:00:01"))
    conn = connect_domain(dom, fake)
    assert [b.device for b in conn.backends] == ["vnet0", "tapx"]
    assert fake.links["vnet0"].mac == "fe:54:00:44:44:44" and fake.links["vnet0"].mtu == 1400
    assert fake.links["tapx"].mac == "fa:00:00:00:00:01"
    assert fake.opened[0].vnet_hdr is False
    conn.close()
    assert "vnet0" not in fake.links and "tapx" not in fake.links
    assert conn.to_delete == []


def test_direct_creates_a_macvtap_and_deletes_it_at_cleanup() -> None:
    fake = host(identity=ROOT, links=[{"name": "lower0", "kind": "veth"}])
    conn = connect_domain(domain(direct(driver=Driver(queues=2))), fake)
    (b,) = conn.backends
    assert b.device == "macvtap0" and b.delete_at_stop and len(b.fds) == 2
    assert fake.links["macvtap0"].mac == "52:54:00:99:99:03"
    conn.close()
    assert "macvtap0" in fake.links  # only explicit deletion removes a macvtap
    assert conn.cleanup() == []
    assert "macvtap0" not in fake.links and fake.deleted == ["macvtap0"]


def test_bridge_privileged_enslaves_a_new_tap() -> None:
    fake = host(identity=ROOT, links=[{"name": "br0", "kind": "bridge", "mtu": 9000}])
    conn = connect_domain(domain(bridge()), fake)
    assert fake.links["vnet0"].master == "br0" and fake.links["vnet0"].mtu == 9000
    assert conn.backends[0].host_mtu == 9000
    conn.close()


def test_bridge_unprivileged_uses_the_helper_once() -> None:
    fake = host(links=[{"name": "br0", "kind": "bridge"}])
    conn = connect_domain(domain(bridge(model=NicModel.E1000)), fake,
                          bridge_helper=fake.run_bridge_helper, helper_path="/h")
    (op,) = fake.opened
    assert (op.op, op.device, op.node, op.vnet_hdr) == ("bridge_helper", "br0", "/h", False)
    assert len(conn.backends[0].fds) == 1
    conn.close()


def test_user_networking_needs_nothing() -> None:
    fake = host()
    conn = connect_domain(domain(user(link_state=LinkState.DOWN)), fake)
    assert conn.backends[0].kind == "user" and conn.fds() == [] and not fake.opened


def test_warnings_travel_with_the_backend() -> None:
    fake = host(links=[tap_link(up=False)])
    conn = connect_domain(domain(tap()), fake)
    assert [w.code.code for w in conn.warnings()] == ["device-down"]
    conn.close()


def test_vhost_only_for_kvm_virtio_when_available() -> None:
    fake = host(links=[tap_link(tun={"multi_queue": True})], vhost_net=True)
    conn = connect_domain(domain(tap(queues=2), kvm=True), fake,
                          vhost_opener=fake.open_vhost_net)
    assert conn.backends[0].vhost_fds.fds == (5, 6)
    argv = build_argv(domain(tap(queues=2), kvm=True), conn.specs(), qmp_socket="/q")
    assert '{"type":"tap","fds":"3:4","vhost":true,"vhostfds":"5:6","id":"hostnet0"}' in argv
    conn.close()
    for dom in (domain(tap(queues=2)),
                domain(tap(queues=2, driver=Driver(name=DriverName.QEMU)), kvm=True)):
        fake = host(links=[tap_link(tun={"multi_queue": True})], vhost_net=True)
        conn = connect_domain(dom, fake, vhost_opener=fake.open_vhost_net)
        assert conn.backends[0].vhost_fds.fds == ()
        conn.close()


def test_vhost_open_failure_is_a_warning_unless_requested() -> None:
    fake = host(links=[tap_link()], vhost_net=True, fail={"vhost": "EACCES"})
    conn = connect_domain(domain(tap(), kvm=True), fake, vhost_opener=fake.open_vhost_net)
    assert conn.backends[0].vhost_fds.fds == ()
    conn.close()
    fake = host(links=[tap_link()], vhost_net=True, fail={"vhost": "EACCES"})
    iface = tap(driver=Driver(name=DriverName.VHOST))
    with pytest.raises(TapvirtError) as exc:
        connect_domain(domain(iface, kvm=True), fake, vhost_opener=fake.open_vhost_net)
    assert exc.value.code.code == "vhost-unavailable"
    assert not fake.open_fds  # the tap fd opened before vhost failed was closed


# ---- rollback --------------------------------------------------------------------------

def test_failing_second_nic_closes_the_first_nics_fds() -> None:
    fake = host(links=[tap_link(tun={"multi_queue": True}), tap_link("tap1")],
                fail={"open_tap:tap1": "EBUSY"})
    dom = domain(tap(queues=3), tap("tap1", "52:54:00:11:11:12"))
    with pytest.raises(TapvirtError) as exc:
        connect_domain(dom, fake)
    assert exc.value.code.code == "device-busy"
    assert "already attached" in exc.value.message
    assert fake.opened[0].fds == (3, 4, 5)
    assert not fake.open_fds and sorted(fake.closed_fds) == [3, 4, 5]
    assert not fake.changes


def test_failure_deletes_created_devices_and_closes_everything() -> None:
    fake = host(identity=ROOT, links=[{"name": "lower0", "kind": "veth"}, tap_link()],
                fail={"open_tap:mytap0": "EIO"})
    dom = domain(direct(), managed(), tap(mac="52:54:00:11:11:13"))
    with pytest.raises(TapvirtError) as exc:
        connect_domain(dom, fake)
    assert exc.value.code.code == "host-error"
    assert fake.created == ["macvtap0", "vnet0"]
    assert fake.deleted == ["macvtap0"]
    assert set(fake.links) == {"lower0", "mytap0"}  # vnet0 vanished with its fds
    assert not fake.open_fds and not fake.changes


def test_failure_while_opening_a_created_macvtap_deletes_it() -> None:
    fake = host(identity=ROOT, links=[{"name": "lower0", "kind": "veth"}],
                fail={"open_macvtap:macvtap0": "EACCES"})
    with pytest.raises(TapvirtError):
        connect_domain(domain(direct()), fake)
    assert fake.deleted == ["macvtap0"] and "macvtap0" not in fake.links


def test_checks_stop_everything_before_any_open() -> None:
    fake = host(links=[tap_link(), tap_link("tap1", tun={"owner": 2000})])
    with pytest.raises(TapvirtError) as exc:
        connect_domain(domain(tap(), tap("tap1", "52:54:00:11:11:12")), fake)
    assert exc.value.code.code == "device-foreign-owner"
    assert "tap1" in exc.value.message and not fake.opened


@pytest.mark.parametrize(("errno_name", "link", "code"), [
    ("EPERM", tap_link(), "device-foreign-owner"),
    ("EINVAL", tap_link(), "queues-mismatch"),
    ("EBUSY", tap_link(), "device-busy"),
    ("EACCES", tap_link(), "tun-node-inaccessible"),
    ("ENODEV", tap_link(), "device-missing"),
    ("EIO", tap_link(), "host-error"),
])
def test_kernel_errno_at_open_maps_to_codes(errno_name: str, link: dict[str, object],
                                            code: str) -> None:
    # the device looked fine to the checks but changed before the open (a race)
    fake = host(links=[link], fail={"open_tap:mytap0": errno_name})
    with pytest.raises(TapvirtError) as exc:
        connect_domain(domain(tap()), fake)
    assert exc.value.code.code == code
    assert "Errno" not in exc.value.message and exc.value.fix


@pytest.mark.parametrize(("errno_name", "code"), [
    ("ENOENT", "macvtap-node-missing"), ("EACCES", "macvtap-node-foreign"),
    ("EXDEV", "macvtap-node-foreign")])
def test_macvtap_errno_maps_to_codes(errno_name: str, code: str) -> None:
    fake = host(links=[{"name": "mv0", "kind": "macvtap", "ifindex": 5,
                        "mac": "52:54:00:11:11:11"}], fail={"open_macvtap:mv0": errno_name})
    with pytest.raises(TapvirtError) as exc:
        connect_domain(domain(tap("mv0")), fake)
    assert exc.value.code.code == code


def test_plan_predicts_the_argv_of_a_real_connect() -> None:
    links = [tap_link(tun={"multi_queue": True}, mtu=9000), tap_link("tap1"),
             {"name": "br0", "kind": "bridge", "mtu": 1400}]
    dom = domain(tap(queues=2), user(), tap("tap1", "52:54:00:11:11:12", model=NicModel.E1000),
                 bridge(), kvm=True)
    fake = host(links=links, vhost_net=True)
    planned = build_argv(dom, plan_domain(dom, fake), qmp_socket="/q")
    conn = connect_domain(dom, fake, bridge_helper=fake.run_bridge_helper,
                          vhost_opener=fake.open_vhost_net)
    assert build_argv(dom, conn.specs(), qmp_socket="/q") == planned
    conn.close()
    assert not fake.open_fds


def test_a_device_that_cannot_be_removed_is_named_in_the_fix() -> None:
    fake = host(identity=ROOT, links=[{"name": "lower0", "kind": "veth"}, tap_link()],
                fail={"open_tap:mytap0": "EIO", "delete_link:macvtap0": "EBUSY"})
    with pytest.raises(TapvirtError) as exc:
        connect_domain(domain(direct(), tap(mac="52:54:00:11:11:13")), fake)
    assert exc.value.code.code == "host-error"  # the original error stays the one raised
    assert exc.value.details["left_behind"] == ["macvtap0"]
    assert "as root, ip link del macvtap0" in exc.value.fix
    assert not fake.open_fds
