"""Whatever the host looks like and whatever the kernel says, connecting a domain either
works or raises a TapvirtError; it never leaks an fd, leaves a created device behind, or
changes a device it did not create. Hypothesis builds the hosts and the domains."""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from tapvirt.conf.model import (
    BridgeSource,
    Devices,
    DirectMode,
    DirectSource,
    Domain,
    DomainType,
    Driver,
    DriverName,
    Interface,
    InterfaceType,
    LinkState,
    NicModel,
    Target,
)
from tapvirt.errors import TapvirtError
from tapvirt.host.fake import FakeHost
from tapvirt.qemu.argv import build_argv
from tapvirt.qemu.connect import check_domain, connect_domain, plan_domain
from tests.unit.conf.strategies import socket_sources

NAMES = ["t0", "t1", "t2", "br0", "mv0", "ve0", "gone"]
MACS = ["52:54:00:00:00:01", "52:54:00:00:00:02", "fe:54:00:00:00:01"]
ERRNOS = ["EPERM", "EINVAL", "EBUSY", "EACCES", "ENOENT", "EIO", "ENODEV", "EEXIST", "ENXIO"]
OPS = ["open_tap:t0", "open_tap:t1", "open_macvtap:mv0", "create_tap", "create_macvtap",
       "vhost", "bridge_helper", "delete_link:macvtap0", "open_macvtap:macvtap0"]


@st.composite
def links(draw: st.DrawFn) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for i, name in enumerate(NAMES[:-1]):
        if draw(st.integers(0, 4)) == 0:  # mostly present: failures at open need good devices
            continue
        kind = {"br0": "bridge", "mv0": "macvtap", "ve0": "veth"}.get(
            name, draw(st.sampled_from(["tap"] * 6 + ["tun", "veth"])))
        link: dict[str, Any] = {
            "name": name, "kind": kind, "ifindex": 10 + i, "up": draw(st.booleans()),
            "mac": ("52:54:00:00:00:01" if kind == "macvtap" and draw(st.booleans())
                    else draw(st.sampled_from(MACS)) if kind != "tap" else "fe:00:00:00:00:09"),
            "mtu": draw(st.sampled_from([1400, 1500, 9000, 9000])),
        }
        if kind in ("tap", "tun"):
            link["tun"] = {
                "owner": draw(st.sampled_from([None, 1000, 1000, 1000, 2000])),
                "group": draw(st.sampled_from([None, None, 1000, 3000])),
                "multi_queue": draw(st.sampled_from([False, False, False, True])),
                "num_queues": draw(st.sampled_from([0, 0, 0, 1])),
            }
        out.append(link)
    return out


@st.composite
def interfaces(draw: st.DrawFn) -> Interface:
    itype = draw(st.sampled_from([InterfaceType.ETHERNET] * 4 + list(InterfaceType)))
    model = draw(st.sampled_from(list(NicModel)))
    queues = draw(st.sampled_from([None, None, 1, 2])) if model is NicModel.VIRTIO else None
    name = draw(st.sampled_from(["t0", "t1", "t2", "mv0", *NAMES, None]))
    driver = Driver(name=draw(st.sampled_from([None, *DriverName])), queues=queues)
    kw: dict[str, Any] = {
        "model": model, "driver": driver, "mtu": draw(st.sampled_from([None, 1500, 9000])),
        "link_state": draw(st.sampled_from([None, LinkState.DOWN])),
        "backend_tap": draw(st.sampled_from([None, None, None, "/dev/net/tun", "/home/u/tun"])),
    }
    mac = draw(st.sampled_from(MACS))
    if name == "mv0" and draw(st.booleans()):
        mac = "52:54:00:00:00:01"  # often the macvtap's own, so it passes the checks
    if itype is InterfaceType.ETHERNET:
        managed = draw(st.sampled_from([None, False, False, False]))
        if managed is False and name is None:
            name = "t0"
        target = Target(name, managed) if name else None
        return Interface(itype, mac, target=target, **kw)
    if itype is InterfaceType.BRIDGE:
        return Interface(itype, mac, source=BridgeSource(draw(st.sampled_from(["br0", "ve0",
                                                                               "gone"]))),
                         **kw)
    if itype is InterfaceType.DIRECT:
        kw["mtu"] = None
        return Interface(itype, mac, source=DirectSource(
            draw(st.sampled_from(["ve0", "gone"])), draw(st.sampled_from(list(DirectMode)))),
            **kw)
    if itype.socket:  # no host side: nothing to check or open
        return Interface(itype, mac, model=model, link_state=kw["link_state"],
                         source=draw(socket_sources(itype)))
    return Interface(itype, mac, model=model, driver=Driver(),
                     link_state=kw["link_state"])


@st.composite
def cases(draw: st.DrawFn) -> tuple[dict[str, Any], Domain]:
    root = draw(st.booleans())
    desc: dict[str, Any] = {
        "identity": {"uid": 0 if root else 1000, "gids": [0] if root else [1000, 3000],
                     "net_admin": root, "user": "u"},
        "links": draw(links()),
        "vhost_net": draw(st.booleans()),
        "fail": dict(draw(st.lists(st.tuples(st.sampled_from(OPS), st.sampled_from(ERRNOS)),
                                   min_size=draw(st.integers(0, 1)), max_size=2))),
        "nodes": {"/home/u/tun": {}} if draw(st.booleans()) else {},
    }
    ifaces = draw(st.lists(interfaces(), min_size=1, max_size=4,
                           unique_by=lambda i: i.dev or i.mac + str(id(i))))
    ifaces = [Interface(**{**i.__dict__, "alias": f"net{n}"}) for n, i in enumerate(ifaces)]
    dom = Domain("g", "c7a5fdbd-edaf-9455-926a-d65c16db1809",
                 type=draw(st.sampled_from(list(DomainType))),
                 devices=Devices(interfaces=tuple(ifaces)))
    return desc, dom


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cases())
def test_connect_never_leaks_or_leaves_devices(case: tuple[dict[str, Any], Domain]) -> None:
    desc, dom = case
    fake = FakeHost.from_json(desc)
    before = {n: link for n, link in fake.links.items()}
    reports = check_domain(dom, fake, user="u")  # read-only, never raises
    assert not fake.opened and not fake.created and len(reports) == len(dom.devices.interfaces)
    planned = build_argv(dom, plan_domain(dom, fake), qmp_socket="/q")
    try:
        conn = connect_domain(dom, fake, user="u", bridge_helper=fake.run_bridge_helper,
                              vhost_opener=fake.open_vhost_net)
    except TapvirtError as err:
        event("opened before failing" if fake.opened else "failed before opening")
        event(err.code.code)
        assert err.code.code != "internal" and err.fix
        assert "Errno" not in err.message
        reported = set(err.details.get("left_behind", []))
        for name in reported:
            assert f"ip link del {name}" in err.fix
    else:
        event("connected")
        assert all(r.verdict != "error" for r in reports)
        if not desc["fail"]:
            assert build_argv(dom, conn.specs(), qmp_socket="/q") == planned
        reported = {e.details["device"] for e in conn.cleanup()}
    assert not fake.open_fds
    # a created device may stay only when deleting it failed, and then the user was told
    assert set(fake.links) - set(before) == reported
    assert not fake.changes


@st.composite
def good_domains_failing_late(draw: st.DrawFn) -> tuple[dict[str, Any], Domain]:
    """Every interface passes the checks; the kernel then refuses one open (a race)."""
    root = draw(st.booleans())
    links: list[dict[str, Any]] = [{"name": "lower0", "kind": "veth"},
                                   {"name": "br0", "kind": "bridge"}]
    ifaces: list[Interface] = []
    ops: list[str] = []
    for n in range(draw(st.integers(2, 5))):
        kind = draw(st.sampled_from(["tap", "macvtap", "user"]
                                    + (["managed", "bridge", "direct"] if root else [])))
        mac = f"52:54:00:00:01:{n:02x}"
        queues = draw(st.sampled_from([1, 2]))
        driver = Driver(queues=queues if queues > 1 else None)
        if kind == "tap":
            links.append({"name": f"t{n}", "kind": "tap", "mac": "fe:00:00:00:00:01",
                          "tun": {"owner": 1000, "multi_queue": queues > 1}})
            ifaces.append(Interface(InterfaceType.ETHERNET, mac, target=Target(f"t{n}", False),
                                    driver=driver))
            ops.append(f"open_tap:t{n}")
        elif kind == "macvtap":
            links.append({"name": f"m{n}", "kind": "macvtap", "ifindex": 40 + n, "mac": mac})
            ifaces.append(Interface(InterfaceType.ETHERNET, mac, target=Target(f"m{n}", False),
                                    driver=driver))
            ops.append(f"open_macvtap:m{n}")
        elif kind == "managed":
            ifaces.append(Interface(InterfaceType.ETHERNET, mac, driver=driver))
            ops.append("create_tap")
        elif kind == "bridge":
            ifaces.append(Interface(InterfaceType.BRIDGE, mac, source=BridgeSource("br0"),
                                    driver=driver))
            ops.append("create_tap")
        elif kind == "direct":
            ifaces.append(Interface(InterfaceType.DIRECT, mac, source=DirectSource("lower0"),
                                    driver=driver))
            ops += ["create_macvtap", "open_macvtap:macvtap0", "open_macvtap:macvtap1"]
        else:
            ifaces.append(Interface(InterfaceType.USER, mac))
    ifaces = [Interface(**{**i.__dict__, "alias": f"net{n}"}) for n, i in enumerate(ifaces)]
    ident = ({"uid": 0, "gids": [0], "net_admin": True, "user": "u"} if root
             else {"uid": 1000, "gids": [1000], "user": "u"})
    fail = {draw(st.sampled_from(ops or ["vhost"])): draw(st.sampled_from(ERRNOS))}
    desc = {"identity": ident, "links": links, "fail": fail}
    return desc, Domain("g", "c7a5fdbd-edaf-9455-926a-d65c16db1809",
                        devices=Devices(interfaces=tuple(ifaces)))


@settings(max_examples=300, deadline=None)
@given(good_domains_failing_late())
def test_a_late_failure_rolls_back_everything(case: tuple[dict[str, Any], Domain]) -> None:
    desc, dom = case
    fake = FakeHost.from_json(desc)
    before = set(fake.links)
    assert all(r.verdict == "ok" for r in check_domain(dom, fake, user="u"))
    try:
        connect_domain(dom, fake, user="u").cleanup()
    except TapvirtError as err:
        event("opened before failing" if fake.opened else "failed at the first open")
        assert err.code.code != "internal" and err.fix and "Errno" not in err.message
    else:
        event("the failing op was not reached")
    assert not fake.open_fds, "an fd stayed open"
    assert set(fake.links) == before, "a created device stayed"
    assert not fake.changes
