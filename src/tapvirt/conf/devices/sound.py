"""`<sound>` (the guest's sound card) and `<audio>` (the host backend it plays into),
libvirt 9.0's elements. QEMU arguments: `tapvirt.qemu.argv.sound`.

libvirt gives every QEMU domain one backend when it has none (`implicit_audio`): `none`,
or `spice` when a SPICE display is there to carry the sound. `alsa` and `oss` play into the
host's sound devices directly (QEMU opens them as the user; ALSA without a card only logs,
OSS needs its /dev/dsp at start: `tapvirt.qemu.hostaudio`). Backends that need a sound
server or desktop session (pulseaudio, jack, sdl), macOS's coreaudio and the D-Bus display's
dbus are refused by name: Debian's qemu-system-x86 has no modules for the first three
(they are in qemu-system-gui) and tapvirt's QEMU runs without the user's session. `pcspk`
is refused too: QEMU 7.2 removed the `-soundhw` option that libvirt 9.0 uses for it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING

from tapvirt.conf import errors as E
from tapvirt.conf.addresses import Address, AddressType
from tapvirt.conf.devices.common import address_lines, parse_device_address
from tapvirt.conf.devices.misc import _alias_lines, _element
from tapvirt.errors import define

if TYPE_CHECKING:
    from lxml import etree

    from tapvirt.conf.devices.graphics import Graphics
    from tapvirt.conf.xml import Reader

AUDIO_BACKEND_UNSUPPORTED = define(
    "audio-backend-unsupported",
    "an <audio> backend that needs the host's sound system (alsa, pulseaudio, oss, ...)",
    layer="conf",
)
SOUND_MODEL_UNSUPPORTED = define(
    "sound-model-unsupported",
    "a <sound> model QEMU 7.2 cannot create as libvirt 9.0 asks (pcspk, ich7)",
    layer="conf",
)
AUDIO_ID_UNKNOWN = define(
    "audio-id-unknown", "a <sound><audio id> or duplicate <audio id> that does not resolve",
    layer="conf",
)
MAX_AUDIO_ID = 2**31 - 1


class SoundModel(StrEnum):
    ICH6 = "ich6"  # intel-hda + codecs
    ICH9 = "ich9"  # ich9-intel-hda + codecs
    AC97 = "ac97"
    ES1370 = "es1370"
    SB16 = "sb16"  # ISA
    USB = "usb"  # usb-audio

    @property
    def has_codecs(self) -> bool:
        return self in (SoundModel.ICH6, SoundModel.ICH9)


class CodecType(StrEnum):
    DUPLEX = "duplex"
    MICRO = "micro"
    OUTPUT = "output"


@dataclass(frozen=True)
class Sound:
    model: SoundModel
    codecs: tuple[CodecType, ...] = ()  # ich6/ich9 only; none written = one duplex codec
    audio_id: int | None = None  # <audio id='N'/>: which backend; None = the first
    alias: str | None = None
    address: Address | None = None  # PCI cards: the slot; usb: the port (assigned)


class AudioType(StrEnum):
    NONE = "none"
    SPICE = "spice"
    FILE = "file"  # a WAV file QEMU writes
    ALSA = "alsa"
    OSS = "oss"


# why each refused backend cannot work for tapvirt's QEMU
_REFUSED_BACKENDS = {
    "pulseaudio": "needs QEMU's pa module (Debian: qemu-system-gui, not installed with "
                  "qemu-system-x86) and the user's PulseAudio server, which tapvirt's "
                  "QEMU (no desktop session) does not reach",
    "jack": "needs QEMU's jack module (Debian: qemu-system-gui) and a running JACK server "
            "of the user's session",
    "sdl": "needs QEMU's SDL module (Debian: qemu-system-gui) and the user's desktop "
           "session",
    "coreaudio": "is macOS's sound system",
    "dbus": "plays to a D-Bus display (<graphics type='dbus'>), which tapvirt does not run",
}


AUDIO_FORMATS = ("s8", "u8", "s16", "u16", "s32", "u32", "f32")


@dataclass(frozen=True)
class AudioStream:
    """`<audio><input>` or `<output>`: QEMU's common audiodev "in"/"out" settings."""
    mixing_engine: bool | None = None
    fixed_settings: bool | None = None
    voices: int | None = None
    buffer_length: int | None = None  # microseconds
    frequency: int | None = None  # <settings>, with fixedSettings
    channels: int | None = None
    format: str | None = None
    dev: str | None = None  # alsa: the ALSA device name; oss: the /dev/dsp path
    buffer_count: int | None = None  # oss
    try_poll: bool | None = None  # oss


@dataclass(frozen=True)
class Audio:
    id: int
    type: AudioType = AudioType.NONE
    timer_period: int | None = None  # microseconds
    path: str | None = None  # file only
    input: AudioStream | None = None
    output: AudioStream | None = None
    try_mmap: bool | None = None  # oss
    exclusive: bool | None = None  # oss
    dsp_policy: int | None = None  # oss


def parse_sound(p: Reader, el: etree._Element, index: int) -> Sound:
    from tapvirt.conf.devices.common import parse_alias as _alias

    found = p.shape(el, ("model",), ("codec", "audio", "alias", "address"), multi=("codec",),
                    required_attrs=("model",))
    raw = el.get("model")
    if raw in ("pcspk", "ich7"):
        raise p.fail(
            SOUND_MODEL_UNSUPPORTED, el,
            "the PC speaker needs QEMU's -soundhw option, which QEMU 7.2 no longer has"
            if raw == "pcspk" else "QEMU has no ich7 sound card",
            "use <sound model='ich9'/> (q35), 'ich6' or 'ac97'", attr="model",
        )
    model = p.enum(el, "model", SoundModel)
    codecs: list[CodecType] = []
    for c in found.get("codec", []):
        if not model.has_codecs:
            raise p.fail(
                E.INVALID_VALUE, c, f"sound model '{model}' has no codecs",
                "remove <codec> (only ich6 and ich9 take codecs)",
            )
        p.shape(c, ("type",), required_attrs=("type",))
        codecs.append(p.enum(c, "type", CodecType))
    audio_id = None
    if (a := p.one(found, "audio")) is not None:
        p.shape(a, ("id",), required_attrs=("id",))
        audio_id = p.uint(a, "id", 1, MAX_AUDIO_ID)
    allowed = () if model is SoundModel.SB16 else (
        (AddressType.USB,) if model is SoundModel.USB else (AddressType.PCI,)
    )
    return Sound(model, tuple(codecs), audio_id,
                 _alias(p, p.one(found, "alias"), f"sound{index}"),
                 parse_device_address(p, p.one(found, "address"), allowed,
                                      f"a sound card of model '{model}'"))


def _yes_no(p: Reader, el: etree._Element, attr: str) -> bool | None:
    raw = el.get(attr)
    if raw is None:
        return None
    if raw not in ("yes", "no"):
        raise p.fail(
            E.INVALID_VALUE, el, f"Invalid value for attribute '{attr}' in element "
            f"'{el.tag}': '{raw[:40]}'.", f"use {attr}='yes' or {attr}='no'", attr=attr,
        )
    return raw == "yes"


_STREAM_ATTRS = {AudioType.ALSA: ("dev",), AudioType.OSS: ("dev", "bufferCount", "tryPoll")}
_DEV_RE = re.compile(r"[a-zA-Z0-9_.\-\\:/]{1,256}\Z")  # libvirt's deviceName


def _stream(p: Reader, el: etree._Element | None, atype: AudioType) -> AudioStream | None:
    if el is None:
        return None
    found = p.shape(el, ("mixingEngine", "fixedSettings", "voices", "bufferLength",
                         *_STREAM_ATTRS.get(atype, ())), ("settings",))
    voices = None if el.get("voices") is None else p.uint(el, "voices", 1, 2**31 - 1)
    buf = (None if el.get("bufferLength") is None
           else p.uint(el, "bufferLength", 1, 2**31 - 1))
    fixed = _yes_no(p, el, "fixedSettings")
    freq = channels = fmt = None
    if (st := p.one(found, "settings")) is not None:
        p.shape(st, ("frequency", "channels", "format"))
        if fixed is not True:
            raise p.fail(
                E.INVALID_VALUE, st, "audio settings specified without fixed settings flag",
                "write fixedSettings='yes' on the <input>/<output>, or remove <settings>",
            )
        if st.get("frequency") is not None:
            freq = p.uint(st, "frequency", 1, 2**31 - 1)
        if st.get("channels") is not None:
            channels = p.uint(st, "channels", 1, 2**31 - 1)
        if (fmt := st.get("format")) is not None and fmt not in AUDIO_FORMATS:
            raise p.fail(
                E.INVALID_VALUE, st, f"Invalid value for attribute 'format' in element "
                f"'settings': '{fmt[:40]}'.", f"use one of: {', '.join(AUDIO_FORMATS)}",
                attr="format",
            )
    dev = el.get("dev")
    if dev is not None and atype is AudioType.OSS:
        dev = p.abspath(el, "dev", dev)
    if dev is not None and not _DEV_RE.match(dev):
        raise p.fail(
            E.INVALID_VALUE, el, f"audio device name {dev[:40]!r} has characters outside "
            "A-Z a-z 0-9 _ . - \\ : / (libvirt's deviceName)",
            "use a name such as dev='default' or dev='hw:0' (ALSA), dev='/dev/dsp' (OSS)",
            attr="dev",
        )
    count = (None if el.get("bufferCount") is None
             else p.uint(el, "bufferCount", 1, 2**32 - 1))
    return AudioStream(_yes_no(p, el, "mixingEngine"), fixed, voices, buf, freq, channels,
                       fmt, dev, count, _yes_no(p, el, "tryPoll"))


def parse_audio(p: Reader, el: etree._Element) -> Audio:
    raw = el.get("type")
    if raw in _REFUSED_BACKENDS:
        raise p.fail(
            AUDIO_BACKEND_UNSUPPORTED, el, f"audio type '{raw}' {_REFUSED_BACKENDS[raw]}",
            "use type='alsa' (the host's sound card), type='spice' with a SPICE display, "
            "type='file' path='/.../out.wav', or type='none'", attr="type",
        )
    oss = ("tryMMap", "exclusive", "dspPolicy") if raw == "oss" else ()
    found = p.shape(el, ("id", "type", "timerPeriod", "path", *oss), ("input", "output"),
                    required_attrs=("id", "type"))
    atype = p.enum(el, "type", AudioType)
    period = None
    if el.get("timerPeriod") is not None:
        period = p.uint(el, "timerPeriod", 1, 2**32 - 1)
    path = None
    if el.get("path") is not None:
        if atype is not AudioType.FILE:
            raise p.fail(
                E.INVALID_VALUE, el, "only audio type 'file' takes a path",
                "remove path= or use type='file'", attr="path",
            )
        path = p.abspath(el, "path", el.get("path", ""))
    policy = None if el.get("dspPolicy") is None else p.uint(el, "dspPolicy", 0, 2**31 - 1)
    return Audio(p.uint(el, "id", 1, MAX_AUDIO_ID), atype, period, path,
                 _stream(p, p.one(found, "input"), atype),
                 _stream(p, p.one(found, "output"), atype),
                 _yes_no(p, el, "tryMMap"), _yes_no(p, el, "exclusive"), policy)


def check_audio_ids(
    p: Reader, audio_els: list[etree._Element], audios: tuple[Audio, ...],
    sound_els: list[etree._Element], sounds: tuple[Sound, ...],
) -> None:
    seen: dict[int, etree._Element] = {}
    for el, a in zip(audio_els, audios, strict=True):
        if a.id in seen:
            raise p.fail(
                AUDIO_ID_UNKNOWN, el, f"audio ID {a.id} is used multiple times",
                f"give each <audio> its own id (the other is at line {seen[a.id].sourceline})",
            )
        seen[a.id] = el
    for el, s in zip(sound_els, sounds, strict=True):
        if s.audio_id is not None and s.audio_id not in seen:
            raise p.fail(
                AUDIO_ID_UNKNOWN, el, f"no audio device with ID {s.audio_id}",
                "add <audio id='...' type='none'/> or point <audio id> at an existing one",
            )


def implicit_audio(graphics: tuple[Graphics, ...]) -> Audio:
    """libvirt's qemuDomainDefAddDefaultAudioBackend with the default qemu.conf: SPICE if
    a SPICE display is there (the last graphics decides), else none."""
    from tapvirt.conf.devices.graphics import GraphicsType

    atype = AudioType.NONE
    for g in graphics:
        atype = AudioType.SPICE if g.type is GraphicsType.SPICE else AudioType.NONE
    return Audio(1, atype)


def format_sound(s: Sound, ind: str, live: bool) -> list[str]:
    from tapvirt.conf.xmlout import a as _a

    body = [f"{ind}  <codec type={_a(c)}/>" for c in s.codecs]
    if s.audio_id is not None:
        body.append(f"{ind}  <audio id='{s.audio_id}'/>")
    body += _alias_lines(s.alias, ind, live) + address_lines(s.address, ind)
    return _element(f"{ind}<sound model={_a(s.model)}", "sound", body, ind)


def _format_stream(tag: str, st: AudioStream, ind: str) -> list[str]:
    from tapvirt.conf.xmlout import attrs as _attrs

    def yn(v: bool | None) -> str | None:
        return None if v is None else ("yes" if v else "no")

    def num(v: int | None) -> str | None:
        return None if v is None else str(v)

    head = f"{ind}<{tag}" + _attrs(
        mixingEngine=yn(st.mixing_engine), fixedSettings=yn(st.fixed_settings),
        voices=num(st.voices), bufferLength=num(st.buffer_length), dev=st.dev,
        bufferCount=num(st.buffer_count), tryPoll=yn(st.try_poll))
    settings = _attrs(frequency=num(st.frequency), channels=num(st.channels),
                      format=st.format)
    if not settings:
        return [head + "/>"]
    return [head + ">", f"{ind}  <settings{settings}/>", f"{ind}</{tag}>"]


def format_audio(a: Audio, ind: str) -> list[str]:
    from tapvirt.conf.xmlout import a as _a
    from tapvirt.conf.xmlout import attrs as _attrs

    def yn(v: bool | None) -> str | None:
        return None if v is None else ("yes" if v else "no")

    period = None if a.timer_period is None else str(a.timer_period)
    policy = None if a.dsp_policy is None else str(a.dsp_policy)
    head = f"{ind}<audio id='{a.id}' type={_a(a.type)}" + _attrs(
        timerPeriod=period, tryMMap=yn(a.try_mmap), exclusive=yn(a.exclusive),
        dspPolicy=policy, path=a.path)
    body: list[str] = []
    for tag, st in (("input", a.input), ("output", a.output)):
        if st is not None:
            body += _format_stream(tag, st, ind + "  ")
    return _element(head, "audio", body, ind)
