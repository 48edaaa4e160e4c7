"""libvirt's defaults and implicit devices, in one post-parse step (libvirt's
qemuDomainDefPostParse / qemuDomainAssignAddresses): applied after every element is parsed
and checked, before the definition is stored, so `dumpxml` shows what the guest gets.

Each step is a pure `Domain -> Domain` function; `STEPS` runs in order. A step says why
libvirt does it. Defaults that belong to one attribute (e.g. the NIC model) stay beside
the element in its family module; what depends on the whole domain (implicit devices,
addresses, names) is here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING, Any, TypeVar

from tapvirt.conf.devices.disk import auto_alias

if TYPE_CHECKING:
    from tapvirt.conf.model import Domain

__all__ = ["STEPS", "apply_defaults"]

_T = TypeVar("_T", bound=Any)


def assign_aliases(dom: Domain) -> Domain:
    """Every device gets its stable name (libvirt's qemuAssignDeviceAliases): disks by bus and
    target (virtio-disk0, sata0-0-0), interfaces by position (net0). A user alias (`ua-...`)
    is kept. QEMU ids, QMP commands and the live XML use these names."""
    d = dom.devices
    disks = tuple(
        disk if disk.alias is not None
        else replace(disk, alias=auto_alias(disk.target_bus, disk.target_dev))
        for disk in d.disks
    )
    ifaces = tuple(
        iface if iface.alias is not None else replace(iface, alias=f"net{n}")
        for n, iface in enumerate(d.interfaces)
    )
    if disks == d.disks and ifaces == d.interfaces:
        return dom
    return replace(dom, devices=replace(d, disks=disks, interfaces=ifaces))


def implicit_audio_video(dom: Domain) -> Domain:
    """libvirt's qemuDomainDefAddDefaultAudioBackend: a domain without <audio> gets backend 1
    (`none`, or `spice` under a SPICE display) that sound cards and VNC play into; and
    virDomainDefAddImplicitVideo: graphics without a <video> get the default card."""
    from tapvirt.conf.devices.graphics import implicit_video
    from tapvirt.conf.devices.sound import implicit_audio

    d = dom.devices
    audios = d.audios or (implicit_audio(d.graphics),)
    video = implicit_video(d.graphics, d.videos)
    videos = (video,) if video is not None else d.videos
    if audios == d.audios and videos == d.videos:
        return dom
    return replace(dom, devices=replace(d, audios=audios, videos=videos))


def assign_peripheral_aliases(dom: Domain) -> Domain:
    """libvirt's names for the other devices (qemuAssignDeviceAliases): input<N>, sound<N>,
    channel<N>, redir<N>, rng<N> by position, balloon0, watchdog0, tpm0. After the implicit
    devices, so that they are numbered too."""
    d = dom.devices

    def numbered(items: tuple[_T, ...], prefix: str) -> tuple[_T, ...]:
        return tuple(x if x.alias is not None else replace(x, alias=f"{prefix}{n}")
                     for n, x in enumerate(items))

    new = replace(
        d, inputs=numbered(d.inputs, "input"), sounds=numbered(d.sounds, "sound"),
        channels=numbered(d.channels, "channel"), redirdevs=numbered(d.redirdevs, "redir"),
        rngs=numbered(d.rngs, "rng"),
        memballoon=d.memballoon if d.memballoon is None or d.memballoon.alias is not None
        or d.memballoon.model == "none" else replace(d.memballoon, alias="balloon0"),
        watchdog=d.watchdog if d.watchdog is None or d.watchdog.alias is not None
        else replace(d.watchdog, alias="watchdog0"),
        tpm=d.tpm if d.tpm is None or d.tpm.alias is not None else replace(d.tpm, alias="tpm0"),
    )
    return dom if new == d else replace(dom, devices=new)


STEPS: tuple[Callable[[Domain], Domain], ...] = (
    assign_aliases, implicit_audio_video, assign_peripheral_aliases,
)


def apply_defaults(dom: Domain) -> Domain:
    """The post-parse step: every default and implicit device, in order."""
    for step in STEPS:
        dom = step(dom)
    return dom
