"""Small builders for hand-made domains (the golden runner uses parsed XML instead)."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from tapvirt.conf.model import (
    BridgeSource,
    Devices,
    DirectSource,
    Domain,
    DomainType,
    Driver,
    Interface,
    InterfaceType,
    NicModel,
    Target,
)
from tapvirt.host.fake import FakeHost

UUID = "c7a5fdbd-edaf-9455-926a-d65c16db1809"


def tap(dev: str = "mytap0", mac: str = "52:54:00:11:11:11", *, queues: int | None = None,
        model: NicModel = NicModel.VIRTIO, **kw: Any) -> Interface:
    driver = kw.pop("driver", None)
    if queues:
        driver = Driver(name=driver.name if driver else None, queues=queues)
    return Interface(InterfaceType.ETHERNET, mac, model=model, target=Target(dev, False),
                     driver=driver, **kw)


def managed(dev: str | None = None, mac: str = "52:54:00:44:44:44", **kw: Any) -> Interface:
    return Interface(InterfaceType.ETHERNET, mac, target=Target(dev) if dev else None, **kw)


def bridge(br: str = "br0", mac: str = "52:54:00:99:99:02", **kw: Any) -> Interface:
    return Interface(InterfaceType.BRIDGE, mac, source=BridgeSource(br), **kw)


def direct(src: str = "lower0", mac: str = "52:54:00:99:99:03", **kw: Any) -> Interface:
    return Interface(InterfaceType.DIRECT, mac, source=DirectSource(src), **kw)


def user(mac: str = "52:54:00:99:99:01", **kw: Any) -> Interface:
    return Interface(InterfaceType.USER, mac, **kw)


def domain(*ifaces: Interface, kvm: bool = False) -> Domain:
    aliased = tuple(
        i if i.alias else replace(i, alias=f"net{n}")
        for n, i in enumerate(ifaces)
    )
    return Domain("guest", UUID, type=DomainType.KVM if kvm else DomainType.QEMU,
                  devices=Devices(interfaces=aliased))


def host(**desc: Any) -> FakeHost:
    desc.setdefault("identity", {"uid": 1000, "gids": [1000], "user": "alice"})
    return FakeHost.from_json(desc)


def tap_link(name: str = "mytap0", **kw: Any) -> dict[str, Any]:
    tun = {"owner": 1000, **kw.pop("tun", {})}
    return {"name": name, "kind": "tap", "mac": "fe:54:00:11:11:11", "tun": tun, **kw}
