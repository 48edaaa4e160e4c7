"""The devices around the guest's disks and NICs, composed for `tapvirt.conf.devices`:
channels, inputs, TPM, graphics, sound, audio, video, USB redirection, USB hubs, watchdog,
memballoon, rng, panic and iommu (each family's own module has its model, parse and format).

`parse_peripherals` parses them and checks what spans them (one balloon, watchdog and
TPM; audio ids; SPICE for spicevmc; aliases are checked with the other devices'), and
`format_peripherals` writes them in libvirt's `<devices>` order, after the consoles.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from tapvirt.conf.devices.channel import (
    SPICE_NEEDED,
    Channel,
    ChannelType,
    format_channel,
    format_redirdev,
    parse_channel,
    parse_redirdev,
)
from tapvirt.conf.devices.graphics import (
    GraphicsType,
    arrange_videos,
    format_graphics,
    format_video,
    parse_graphics,
    parse_video,
    post_parse_graphics,
)
from tapvirt.conf.devices.hub import format_hub, parse_hub
from tapvirt.conf.devices.input import format_input, parse_input
from tapvirt.conf.devices.iommu import format_iommu, parse_iommu
from tapvirt.conf.devices.memory import format_memory, parse_memory
from tapvirt.conf.devices.misc import (
    format_memballoon,
    format_panic,
    format_rng,
    format_watchdog,
    only_once,
    parse_memballoon,
    parse_panic,
    parse_rng,
    parse_watchdog,
    refuse_vsock,
)
from tapvirt.conf.devices.sound import (
    check_audio_ids,
    format_audio,
    format_sound,
    parse_audio,
    parse_sound,
)
from tapvirt.conf.devices.tpm import format_tpm, parse_tpm
from tapvirt.conf.xmlout import IND, Writer

if TYPE_CHECKING:
    from lxml import etree

    from tapvirt.conf.devices import Devices
    from tapvirt.conf.xml import Found, Reader

# in libvirt's virDomainDefFormat order (after serial, console)
TAGS = ("channel", "input", "tpm", "graphics", "sound", "audio", "video", "redirdev",
        "hub", "watchdog", "memballoon", "rng", "panic", "memory", "iommu", "vsock")


def parse_peripherals(r: Reader, found: Found) -> dict[str, Any]:
    """The `Devices` fields of these families."""
    els = {tag: found.get(tag, []) for tag in TAGS}
    if els["vsock"]:
        only_once(r, els["vsock"], "vsock")
        refuse_vsock(r, els["vsock"][0])
    out: dict[str, Any] = {}
    out["channels"] = tuple(parse_channel(r, e, n) for n, e in enumerate(els["channel"]))
    out["inputs"] = tuple(parse_input(r, e, n) for n, e in enumerate(els["input"]))
    if (t := only_once(r, els["tpm"], "TPM")) is not None:
        out["tpm"] = parse_tpm(r, t)
    graphics = tuple(post_parse_graphics(parse_graphics(r, e)) for e in els["graphics"])
    out["graphics"] = graphics
    sounds = tuple(parse_sound(r, e, n) for n, e in enumerate(els["sound"]))
    audios = tuple(parse_audio(r, e) for e in els["audio"])
    check_audio_ids(r, els["audio"], audios, els["sound"], sounds)
    out["sounds"], out["audios"] = sounds, audios
    out["videos"] = arrange_videos(r, els["video"], [parse_video(r, e) for e in els["video"]])
    out["redirdevs"] = tuple(parse_redirdev(r, e, n) for n, e in enumerate(els["redirdev"]))
    out["hubs"] = tuple(parse_hub(r, e, n) for n, e in enumerate(els["hub"]))
    if (wd := only_once(r, els["watchdog"], "watchdog")) is not None:
        out["watchdog"] = parse_watchdog(r, wd)
    if (b := only_once(r, els["memballoon"], "memory balloon")) is not None:
        out["memballoon"] = parse_memballoon(r, b)
    out["rngs"] = tuple(parse_rng(r, e, n) for n, e in enumerate(els["rng"]))
    out["panics"] = tuple(parse_panic(r, e) for e in els["panic"])
    if (io := only_once(r, els["iommu"], "IOMMU")) is not None:
        out["iommu"] = parse_iommu(r, io)
    out["memories"] = tuple(parse_memory(r, e) for e in els["memory"])
    _need_spice(r, els, out["channels"], graphics)
    return out


def _need_spice(
    r: Reader, els: dict[str, list[etree._Element]], channels: tuple[Channel, ...],
    graphics: tuple[Any, ...],
) -> None:
    """spicevmc chardevs talk to the SPICE server: without one QEMU refuses to start."""
    if any(g.type is GraphicsType.SPICE for g in graphics):
        return
    for el, c in zip(els["channel"], channels, strict=True):
        if c.type is ChannelType.SPICEVMC:
            raise r.fail(
                SPICE_NEEDED, el, "a spicevmc channel needs a SPICE display",
                "add <graphics type='spice'/> or use a unix channel",
            )
    if els["redirdev"]:
        raise r.fail(
            SPICE_NEEDED, els["redirdev"][0], "USB redirection of type spicevmc needs a SPICE "
            "display", "add <graphics type='spice'/> or remove <redirdev>",
        )


def device_aliases(d: Devices) -> list[str | None]:
    """The aliases of these families' devices (for the cross-device uniqueness check)."""
    out: list[str | None] = [
        *(c.alias for c in d.channels), *(i.alias for i in d.inputs),
        *(s.alias for s in d.sounds), *(v.alias for v in d.videos),
        *(x.alias for x in d.redirdevs), *(x.alias for x in d.hubs),
        *(x.alias for x in d.rngs), *(x.alias for x in d.memories),
    ]
    out += [d.tpm.alias if d.tpm else None, d.watchdog.alias if d.watchdog else None,
            d.memballoon.alias if d.memballoon else None, d.iommu.alias if d.iommu else None]
    return out


def has_peripherals(d: Devices) -> bool:
    return bool(d.channels or d.inputs or d.tpm or d.graphics or d.sounds or d.audios
                or d.videos or d.redirdevs or d.hubs or d.watchdog or d.memballoon or d.rngs
                or d.panics or d.memories or d.iommu)


def format_peripherals(d: Devices, w: Writer, live: bool, secure: bool = True) -> None:
    ind = IND * 2
    lines: list[str] = []
    for c in d.channels:
        lines += format_channel(c, ind, live)
    for i in d.inputs:
        lines += format_input(i, ind, live)
    if d.tpm is not None:
        lines += format_tpm(d.tpm, ind, live)
    for g in d.graphics:
        lines += format_graphics(g, ind, secure)
    for s in d.sounds:
        lines += format_sound(s, ind, live)
    for au in d.audios:
        lines += format_audio(au, ind)
    for v in d.videos:
        lines += format_video(v, ind, live)
    for x in d.redirdevs:
        lines += format_redirdev(x, ind, live)
    for h in d.hubs:
        lines += format_hub(h, ind, live)
    if d.watchdog is not None:
        lines += format_watchdog(d.watchdog, ind, live)
    if d.memballoon is not None:
        lines += format_memballoon(d.memballoon, ind, live)
    for rng in d.rngs:
        lines += format_rng(rng, ind, live)
    for p in d.panics:
        lines += format_panic(p, ind)
    for m in d.memories:
        lines += format_memory(m, ind, live)
    if d.iommu is not None:
        lines += format_iommu(d.iommu, ind, live)
    for line in lines:
        w(line)
