"""Read-only check of the host sound devices an `<audio type='oss'>` names, before QEMU
starts: QEMU's OSS backend refuses to start ("Could not init `oss' audio driver") when it
cannot open them, so a missing or inaccessible /dev/dsp fails by name instead of as
`qemu-failed`. ALSA needs no check: without a card QEMU only logs and plays nowhere."""

from __future__ import annotations

import os

from tapvirt.conf.devices.sound import AudioType
from tapvirt.conf.model import Domain
from tapvirt.errors import TapvirtError, define

AUDIO_DEVICE_UNAVAILABLE = define(
    "audio-device-unavailable",
    "an <audio type='oss'> device (/dev/dsp) is missing or not readable and writable by "
    "the user",
    layer="lifecycle",
)
OSS_DEFAULT = "/dev/dsp"  # QEMU's default for in.dev and out.dev


def oss_devices(dom: Domain) -> list[tuple[int, str]]:
    """(audio id, device) QEMU opens for each OSS backend, in and out."""
    out: list[tuple[int, str]] = []
    for a in dom.devices.audios:
        if a.type is AudioType.OSS:
            for st in (a.input, a.output):
                dev = (st.dev if st is not None else None) or OSS_DEFAULT
                if (a.id, dev) not in out:
                    out.append((a.id, dev))
    return out


def check_audio_devices(dom: Domain) -> None:
    for audio_id, dev in oss_devices(dom):
        if os.access(dev, os.R_OK | os.W_OK):
            continue
        missing = not os.path.exists(dev)
        raise TapvirtError(
            AUDIO_DEVICE_UNAVAILABLE, f"domain {dom.name} audio {audio_id} ({dev})",
            "it does not exist (the kernel's OSS emulation, snd-pcm-oss, is not loaded, "
            "or there is no sound card)" if missing else
            f"it cannot be read and written by uid {os.getuid()}",
            "use <audio type='alsa'/> (or 'none'), or load snd-pcm-oss" if missing else
            "add yourself to the device's group (usually `audio`) and log in again, or "
            "use <audio type='none'/>",
        )
