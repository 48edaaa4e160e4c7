"""QEMU arguments of `<audio>` (`-audiodev`) and `<sound>` (`-device`). PURE.

libvirt 9.0 for QEMU 7.2 (qemuBuildAudioCommandLineArg, qemuBuildSoundCommandLine): the
card gets `audiodev` unless it is an HDA controller, whose codecs get it instead; an HDA
controller without codecs gets one duplex codec.
"""

from __future__ import annotations

from typing import Any

from tapvirt.conf.devices.sound import (
    Audio,
    AudioStream,
    AudioType,
    CodecType,
    Sound,
    SoundModel,
)

_SOUND_DRIVER = {
    SoundModel.ES1370: "ES1370", SoundModel.AC97: "AC97", SoundModel.ICH6: "intel-hda",
    SoundModel.ICH9: "ich9-intel-hda", SoundModel.SB16: "sb16", SoundModel.USB: "usb-audio",
}
_CODEC_DRIVER = {
    CodecType.DUPLEX: "hda-duplex", CodecType.MICRO: "hda-micro",
    CodecType.OUTPUT: "hda-output",
}


# libvirt's qemuAudioDriver names: QEMU calls the file backend "wav"
_AUDIO_DRIVER = {AudioType.NONE: "none", AudioType.SPICE: "spice", AudioType.FILE: "wav",
                 AudioType.ALSA: "alsa", AudioType.OSS: "oss"}


def audiodev(a: Audio) -> dict[str, Any]:
    """libvirt 9.0's qemuBuildAudioCommandLineArg, in its order."""
    out: dict[str, Any] = {"id": f"audio{a.id}", "driver": _AUDIO_DRIVER[a.type]}
    if a.timer_period is not None:
        out["timer-period"] = a.timer_period
    oss: tuple[tuple[str, bool | int | None], ...] = (
        ("try-mmap", a.try_mmap), ("exclusive", a.exclusive), ("dsp-policy", a.dsp_policy))
    out.update((k, v) for k, v in oss if v is not None)
    if a.type is AudioType.FILE and a.path is not None:
        out["path"] = a.path
    for key, st in (("in", a.input), ("out", a.output)):
        if st is not None and (obj := _stream(st)):
            out[key] = obj
    return out


def _stream(st: AudioStream) -> dict[str, Any]:
    """libvirt's qemuBuildAudioCommonProps, in its order."""
    out: dict[str, Any] = {}
    common: tuple[tuple[str, bool | int | None], ...] = (
        ("mixing-engine", st.mixing_engine), ("fixed-settings", st.fixed_settings),
        ("voices", st.voices), ("buffer-length", st.buffer_length))
    out.update((k, v) for k, v in common if v is not None)
    if st.fixed_settings:
        settings: tuple[tuple[str, int | str | None], ...] = (
            ("frequency", st.frequency), ("channels", st.channels), ("format", st.format))
        out.update((k, v) for k, v in settings if v is not None)
    backend: tuple[tuple[str, bool | int | str | None], ...] = (
        ("dev", st.dev), ("buffer-count", st.buffer_count), ("try-poll", st.try_poll))
    out.update((k, v) for k, v in backend if v is not None)
    return out


def resolve_audio_id(s: Sound, audios: tuple[Audio, ...]) -> int | None:
    """The backend a card plays into: its <audio id>, else the first backend."""
    if s.audio_id is not None:
        return s.audio_id
    return audios[0].id if audios else None


def sound_devices(s: Sound, alias: str, audio_id: int | None) -> list[dict[str, Any]]:
    """The card's -device object, then its codecs' (HDA only). The card's address
    properties go into the first object."""
    audio = None if audio_id is None else f"audio{audio_id}"
    card: dict[str, Any] = {"driver": _SOUND_DRIVER[s.model], "id": alias}
    if not s.model.has_codecs and audio is not None:
        card["audiodev"] = audio
    out = [card]
    if s.model.has_codecs:
        for cad, codec in enumerate(s.codecs or (CodecType.DUPLEX,)):
            dev: dict[str, Any] = {"driver": _CODEC_DRIVER[codec], "id": f"{alias}-codec{cad}",
                                   "bus": f"{alias}.0", "cad": cad}
            if audio is not None:
                dev["audiodev"] = audio
            out.append(dev)
    return out


def sound_is_pci(s: Sound) -> bool:
    return s.model not in (SoundModel.SB16, SoundModel.USB)
