"""`<graphics>` (VNC and SPICE) and `<video>`, with libvirt 9.0's parse rules, defaults and
canonical format. The QEMU arguments are in `tapvirt.qemu.argv.graphics`.

Graphics: one `<listen>` (an address, a UNIX socket, or none), a fixed port or
`autoport`, and a password that never reaches the command line (QEMU gets it by QMP
`set_password` after start; the model keeps it). TLS (`tlsPort`, secure channels), SASL,
OpenGL and libvirt networks as listen sources need host configuration an unprivileged
QEMU does not have: they are refused by name.

Video: the first device is the primary one (libvirt moves a `primary='yes'` one to the
front); video memory sizes get libvirt's defaults (`virDomainVideoDefaultRAM`) so the
stored definition says what the guest gets.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING

from tapvirt.conf import errors as E
from tapvirt.conf.addresses import Address, AddressType
from tapvirt.conf.devices.common import address_lines, parse_device_address
from tapvirt.conf.devices.misc import _alias_lines, _element
from tapvirt.errors import define

if TYPE_CHECKING:
    from lxml import etree

    from tapvirt.conf.xml import Reader

_L = "conf"
GRAPHICS_UNSUPPORTED = define(
    "graphics-unsupported",
    "a graphics type or option that needs host set-up an unprivileged QEMU lacks "
    "(sdl, egl-headless, dbus, rdp, TLS, OpenGL, listen on a libvirt network)",
    layer=_L,
)
VIDEO_UNSUPPORTED = define(
    "video-unsupported",
    "a video model or option tapvirt cannot give an unprivileged TCG guest "
    "(3D acceleration, vhost-user, xen/vbox/parallels/gop)",
    layer=_L,
)

VNC_PORT_MIN = 5900
PORT_MAX = 65535
MAX_HEADS = 16  # QEMU's qxl and virtio-gpu limit
MAX_VIDEO_KIB = 2**31 // 1024  # libvirt's unsigned int KiB, kept sane


class GraphicsType(StrEnum):
    VNC = "vnc"
    SPICE = "spice"


class ListenType(StrEnum):
    ADDRESS = "address"  # TCP on `address` (None: 127.0.0.1, qemu.conf's default)
    SOCKET = "socket"  # a UNIX socket (None: <runtime dir>/vnc.sock or spice.sock)
    NONE = "none"  # no network listener at all


DEFAULT_LISTEN_ADDRESS = "127.0.0.1"  # libvirt's vnc_listen / spice_listen default


@dataclass(frozen=True)
class Listen:
    type: ListenType = ListenType.ADDRESS
    address: str | None = None
    socket: str | None = None


class SharePolicy(StrEnum):
    ALLOW_EXCLUSIVE = "allow-exclusive"
    FORCE_SHARED = "force-shared"
    IGNORE = "ignore"


# SPICE's optional children: (element, attribute, allowed values, QEMU -spice option)
SPICE_OPTIONS: tuple[tuple[str, str, tuple[str, ...], str], ...] = (
    ("image", "compression", ("auto_glz", "auto_lz", "quic", "glz", "lz", "off"),
     "image-compression"),
    ("jpeg", "compression", ("auto", "never", "always"), "jpeg-wan-compression"),
    ("zlib", "compression", ("auto", "never", "always"), "zlib-glz-wan-compression"),
    ("playback", "compression", ("on", "off"), "playback-compression"),
    ("streaming", "mode", ("filter", "all", "off"), "streaming-video"),
    ("mouse", "mode", ("server", "client"), "agent-mouse"),
    ("clipboard", "copypaste", ("yes", "no"), "disable-copy-paste"),
    ("filetransfer", "enable", ("yes", "no"), "disable-agent-file-xfer"),
)
SPICE_CHANNELS = (
    "main", "display", "inputs", "cursor", "playback", "record", "smartcard", "usbredir",
)


@dataclass(frozen=True)
class Graphics:
    type: GraphicsType
    autoport: bool = True
    port: int | None = None  # a fixed port (autoport='no'); None with autoport
    listen: Listen = field(default_factory=Listen)
    # VNC/SPICE password: set by QMP after start, never on the command line
    passwd: str | None = field(default=None, repr=False)
    keymap: str | None = None
    share_policy: SharePolicy | None = None  # VNC only
    # SPICE only: (element, value) in SPICE_OPTIONS order; channels forced to plaintext
    spice_options: tuple[tuple[str, str], ...] = ()
    spice_insecure_channels: tuple[str, ...] = ()
    spice_default_insecure: bool = False  # defaultMode='insecure'


_GRAPHICS_ATTRS = {
    GraphicsType.VNC: ("type", "port", "autoport", "listen", "socket", "passwd", "keymap",
                       "sharePolicy"),
    GraphicsType.SPICE: ("type", "port", "tlsPort", "autoport", "listen", "passwd", "keymap",
                         "defaultMode"),
}
# why each display type cannot work for tapvirt's QEMU (checked on Debian 12's QEMU 7.2)
_REFUSED_TYPES = {
    "sdl": "opens a window on the host's desktop: tapvirt's QEMU runs detached from your "
           "desktop session, and Debian's qemu-system-x86 has no SDL module (it is in "
           "qemu-system-gui)",
    "egl-headless": "renders with OpenGL on a host GPU render node (/dev/dri/renderD*; "
                    "QEMU: 'egl: no drm render node available' without one); tapvirt sets "
                    "up no OpenGL",
    "dbus": "exports the display on D-Bus: libvirt starts a private dbus-daemon for it "
            "(or hands a peer-to-peer connection to its client); tapvirt does neither",
    "rdp": "is not a QEMU display (libvirt offers it for VirtualBox and Hyper-V)",
    "desktop": "is VirtualBox's desktop window, not a QEMU display",
}
KEYMAP_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz-_")


def parse_graphics(p: Reader, el: etree._Element) -> Graphics:
    raw = el.get("type")
    if raw in _REFUSED_TYPES:
        raise p.fail(
            GRAPHICS_UNSUPPORTED, el, f"graphics type '{raw}' {_REFUSED_TYPES[raw]}",
            "use <graphics type='vnc'/> or type='spice' and connect a viewer to it "
            "(`tapvirt domdisplay NAME` prints its URI)", attr="type",
        )
    if raw is None:
        p.shape(el, ("type",), required_attrs=("type",))
    gtype = p.enum(el, "type", GraphicsType)
    children: tuple[str, ...] = ("listen",)
    if gtype is GraphicsType.SPICE:
        children = ("listen", *(o[0] for o in SPICE_OPTIONS), "channel", "gl")
    found = p.shape(el, _GRAPHICS_ATTRS[gtype], children, multi=("listen", "channel"))
    if gtype is GraphicsType.SPICE:
        if el.get("tlsPort") not in (None, "-1", "0") or el.get("defaultMode") == "secure":
            raise p.fail(
                GRAPHICS_UNSUPPORTED, el,
                "SPICE over TLS needs certificates in /etc/pki/libvirt-spice configured for "
                "libvirt; tapvirt does not set up TLS", "remove tlsPort and "
                "defaultMode='secure' (tunnel the plaintext port over SSH instead)",
            )
        if (g := p.one(found, "gl")) is not None:
            raise p.fail(
                GRAPHICS_UNSUPPORTED, g, "SPICE OpenGL needs a host render node",
                "remove <gl>",
            )
    listen = _listen(p, el, found.get("listen", []), gtype)
    autoport, port = _ports(p, el, gtype, listen)
    passwd = el.get("passwd")
    if passwd is not None and ("\n" in passwd or len(passwd) > 256):
        raise p.fail(
            E.INVALID_VALUE, el, "the graphics password must be one line of at most 256 "
            "characters", "choose a shorter password", attr="passwd",
        )
    keymap = el.get("keymap")
    if keymap is not None and (not keymap or len(keymap) > 16 or
                               not set(keymap.lower()) <= KEYMAP_CHARS):
        raise p.fail(
            E.INVALID_VALUE, el, f"keymap '{keymap[:40]}' is not a QEMU keymap name",
            "use a name such as en-us or de, or leave keymap out", attr="keymap",
        )
    share = None
    if gtype is GraphicsType.VNC and el.get("sharePolicy") is not None:
        share = p.enum(el, "sharePolicy", SharePolicy)
        if listen.type is ListenType.SOCKET:  # libvirt's schema has it for TCP only
            raise p.fail(
                E.INVALID_VALUE, el, "sharePolicy applies to a VNC server on a TCP port, "
                "not on a UNIX socket", "remove sharePolicy= or listen on an address",
                attr="sharePolicy",
            )
    options: list[tuple[str, str]] = []
    insecure: list[str] = []
    default_insecure = False
    if gtype is GraphicsType.SPICE:
        for tag, attr, values, _opt in SPICE_OPTIONS:
            if (c := p.one(found, tag)) is not None:
                p.shape(c, (attr,), required_attrs=(attr,))
                value = c.get(attr, "")
                if value not in values:
                    raise p.fail(
                        E.INVALID_VALUE, c, f"Invalid value for attribute '{attr}' in "
                        f"element '{tag}': '{value[:40]}'.", f"use one of: {', '.join(values)}",
                        attr=attr,
                    )
                options.append((tag, value))
        for c in found.get("channel", []):
            p.shape(c, ("name", "mode"), required_attrs=("name", "mode"))
            name, mode = c.get("name", ""), c.get("mode", "")
            if name not in SPICE_CHANNELS:
                raise p.fail(
                    E.INVALID_VALUE, c, f"Invalid value for attribute 'name' in element "
                    f"'channel': '{name[:40]}'.", f"use one of: {', '.join(SPICE_CHANNELS)}",
                    attr="name",
                )
            if mode == "secure":
                raise p.fail(
                    GRAPHICS_UNSUPPORTED, c, "a secure SPICE channel needs TLS, which "
                    "tapvirt does not set up", "use mode='insecure' or mode='any'",
                    attr="mode",
                )
            if mode not in ("insecure", "any"):
                raise p.fail(
                    E.INVALID_VALUE, c, f"Invalid value for attribute 'mode' in element "
                    f"'channel': '{mode[:40]}'.", "use mode='insecure' or mode='any'",
                    attr="mode",
                )
            if mode == "insecure" and name not in insecure:
                insecure.append(name)
        if el.get("defaultMode") not in (None, "any", "insecure"):
            raise p.fail(
                E.INVALID_VALUE, el, f"Invalid value for attribute 'defaultMode' in element "
                f"'graphics': '{el.get('defaultMode', '')[:40]}'.",
                "use defaultMode='any' or defaultMode='insecure'", attr="defaultMode",
            )
        default_insecure = el.get("defaultMode") == "insecure"
        # after libvirt's post-parse: no port and autoport='no' listens nowhere too
        nowhere = listen.type is ListenType.NONE or (
            listen.type is ListenType.ADDRESS and not autoport and port is None)
        if (default_insecure or insecure) and nowhere:
            raise p.fail(
                E.INVALID_VALUE, el, "spice insecure channels set in XML configuration, but "
                "plaintext connection is not available", "give the graphics a port or "
                "autoport='yes', or remove the channel modes",
            )
    return Graphics(
        type=gtype, autoport=autoport, port=port, listen=listen, passwd=passwd, keymap=keymap,
        share_policy=share, spice_options=tuple(options),
        spice_insecure_channels=tuple(n for n in SPICE_CHANNELS if n in insecure),
        spice_default_insecure=default_insecure,
    )


def _listen(
    p: Reader, el: etree._Element, listens: list[etree._Element], gtype: GraphicsType
) -> Listen:
    if len(listens) > 1:
        raise p.fail(
            GRAPHICS_UNSUPPORTED, listens[1], "QEMU listens on one address per graphics "
            "device", "keep one <listen>",
        )
    attr_listen = el.get("listen") or None
    attr_socket = el.get("socket") if gtype is GraphicsType.VNC else None
    if attr_socket is not None:
        attr_socket = p.abspath(el, "socket", attr_socket)
    if not listens:
        if attr_socket is not None:
            return Listen(ListenType.SOCKET, socket=attr_socket)
        return Listen(ListenType.ADDRESS, address=_address(p, el, "listen", attr_listen))
    ln = listens[0]
    p.shape(ln, ("type", "address", "socket", "network", "autoGenerated"),
            required_attrs=("type",))
    if ln.get("type") == "network":
        raise p.fail(
            GRAPHICS_UNSUPPORTED, ln, "listen type 'network' needs libvirt's network driver",
            "write <listen type='address' address='...'/> with the host address", attr="type",
        )
    ltype = p.enum(ln, "type", ListenType)
    for attr, valid in (("address", ListenType.ADDRESS), ("socket", ListenType.SOCKET)):
        if ln.get(attr) is not None and ltype is not valid:
            raise p.fail(
                E.INVALID_VALUE, ln, f"'{attr}' attribute is valid only for listen type "
                f"'{valid}'", f"remove {attr}= or write type='{valid}'", attr=attr,
            )
    if ln.get("network") is not None:
        raise p.fail(
            E.INVALID_VALUE, ln, "'network' attribute is valid only for listen type 'network'",
            "remove network=", attr="network",
        )
    if ltype is ListenType.ADDRESS:
        address = _address(p, ln, "address", ln.get("address") or None)
        if attr_listen is not None and attr_listen != address:
            raise p.fail(
                E.INVALID_VALUE, el, f"graphics 'listen' attribute '{attr_listen[:40]}' must "
                f"match 'address' attribute of first listen element (found "
                f"'{(address or '')[:40]}')", "write the same address in both, or drop "
                "listen= from <graphics>", attr="listen",
            )
        if attr_socket is not None:  # libvirt's compatibility rule: socket= wins
            return Listen(ListenType.SOCKET, socket=attr_socket)
        return Listen(ListenType.ADDRESS, address=address)
    if attr_listen is not None:
        raise p.fail(
            E.INVALID_VALUE, el, f"graphics 'listen' attribute needs a listen of type "
            f"'address', not '{ltype}'", "remove listen= from <graphics>", attr="listen",
        )
    if ltype is ListenType.SOCKET:
        sock = ln.get("socket")
        path = p.abspath(ln, "socket", sock) if sock is not None else None
        if attr_socket is not None and path is not None and attr_socket != path:
            raise p.fail(
                E.INVALID_VALUE, el, f"graphics 'socket' attribute '{attr_socket[:40]}' must "
                f"match 'socket' attribute of first listen element (found '{path[:40]}')",
                "write the same path in both, or drop socket= from <graphics>",
                attr="socket",
            )
        return Listen(ListenType.SOCKET, socket=path or attr_socket)
    return Listen(ListenType.NONE)


def _address(p: Reader, el: etree._Element, attr: str, value: str | None) -> str | None:
    if value is None:
        return None
    import ipaddress

    try:
        ipaddress.ip_address(value)
    except ValueError:
        raise p.fail(
            E.INVALID_VALUE, el, f"listen address '{value[:40]}' is not an IP address",
            "write an IPv4 or IPv6 address such as 127.0.0.1 or ::1 (host names are not "
            "resolved)", attr=attr,
        ) from None
    return value


def _ports(
    p: Reader, el: etree._Element, gtype: GraphicsType, listen: Listen
) -> tuple[bool, int | None]:
    raw_port = el.get("port")
    port = None
    if raw_port is not None and raw_port != "-1":
        port = p.uint(el, "port", 0, PORT_MAX) or None
    raw_auto = el.get("autoport")
    if raw_auto is not None and raw_auto not in ("yes", "no"):
        raise p.fail(
            E.INVALID_VALUE, el, f"Invalid value for attribute 'autoport' in element "
            f"'graphics': '{raw_auto[:40]}'.", "use autoport='yes' or autoport='no'",
            attr="autoport",
        )
    if gtype is GraphicsType.VNC:
        autoport = raw_port in (None, "-1") if raw_auto is None else raw_auto == "yes"
    else:
        autoport = raw_auto == "yes" or (raw_port == "-1" and el.get("tlsPort") == "-1")
    if listen.type is not ListenType.ADDRESS:
        return False, None  # ports mean nothing without a TCP listener (not formatted)
    if autoport:
        return True, None
    if gtype is GraphicsType.VNC and (port is None or port < VNC_PORT_MIN):
        raise p.fail(
            E.INVALID_VALUE, el, "vnc port must be in range [5900,65535]",
            "write port='5900' or more, or autoport='yes'", attr="port",
        )
    return False, port


def post_parse_graphics(g: Graphics) -> Graphics:
    """libvirt's virDomainDefPostParseGraphics: SPICE without ports and autoport='no'
    listens nowhere, which the definition then says as <listen type='none'/>."""
    if (g.type is GraphicsType.SPICE and g.listen.type is ListenType.ADDRESS
            and not g.autoport and g.port is None):
        from dataclasses import replace

        return replace(g, listen=Listen(ListenType.NONE))
    return g


def format_graphics(g: Graphics, ind: str, secure: bool) -> list[str]:
    """`secure`: write the password (the stored definition); dumpxml leaves it out."""
    from tapvirt.conf.xmlout import a as _a
    from tapvirt.conf.xmlout import attrs as _attrs

    head = f"{ind}<graphics type={_a(g.type)}"
    ln = g.listen
    if ln.type is ListenType.SOCKET and g.type is GraphicsType.VNC and ln.socket:
        head += f" socket={_a(ln.socket)}"
    elif ln.type is ListenType.ADDRESS:
        if g.autoport and g.type is GraphicsType.VNC:
            head += " port='-1'"
        elif g.port is not None:
            head += f" port='{g.port}'"
        head += f" autoport={_a('yes' if g.autoport else 'no')}"
        if ln.address is not None:
            head += f" listen={_a(ln.address)}"
    head += _attrs(keymap=g.keymap)
    if g.type is GraphicsType.VNC:
        head += _attrs(sharePolicy=g.share_policy)
    elif g.spice_default_insecure:
        head += " defaultMode='insecure'"
    if g.passwd is not None and secure:
        head += f" passwd={_a(g.passwd)}"
    body = [f"{ind}  <listen type={_a(ln.type)}" + _attrs(
        address=ln.address if ln.type is ListenType.ADDRESS else None,
        socket=ln.socket if ln.type is ListenType.SOCKET else None,
    ) + "/>"]
    for name in g.spice_insecure_channels:
        body.append(f"{ind}  <channel name={_a(name)} mode='insecure'/>")
    options = dict(g.spice_options)
    for tag, attr, _values, _opt in SPICE_OPTIONS:
        if tag in options:
            body.append(f"{ind}  <{tag} {attr}={_a(options[tag])}/>")
    return _element(head, "graphics", body, ind)


# --- video ----------------------------------------------------------------------------


class VideoModel(StrEnum):
    VGA = "vga"
    CIRRUS = "cirrus"
    VMVGA = "vmvga"
    QXL = "qxl"
    VIRTIO = "virtio"
    BOCHS = "bochs"
    RAMFB = "ramfb"
    NONE = "none"

    @property
    def primary_only(self) -> bool:
        """Models QEMU has only as the VGA-compatible primary card."""
        return self not in (VideoModel.QXL, VideoModel.VIRTIO, VideoModel.NONE)


# libvirt's virDomainVideoDefaultRAM (KiB) for a QEMU/KVM domain
_DEFAULT_VRAM = {
    VideoModel.VGA: 16384, VideoModel.CIRRUS: 16384, VideoModel.VMVGA: 16384,
    VideoModel.BOCHS: 16384, VideoModel.QXL: 65536,
}
QXL_DEFAULT_RAM = 65536
QXL_DEFAULT_VGAMEM = 16384  # QEMU_QXL_VGAMEM_DEFAULT
DEFAULT_VIDEO = VideoModel.CIRRUS  # qemuDomainDefaultVideoDevice on x86 with QEMU 7.2


@dataclass(frozen=True)
class Video:
    model: VideoModel
    vram: int = 0  # KiB; 0 = not applicable (virtio, ramfb, none)
    ram: int = 0  # qxl only
    vram64: int = 0  # qxl only
    vgamem: int = 0  # qxl only
    heads: int = 1
    primary: bool = False
    resolution: tuple[int, int] | None = None
    alias: str | None = None
    address: Address | None = None  # its PCI slot (assigned; ramfb and none have none)


def parse_video(p: Reader, el: etree._Element) -> Video:
    found = p.shape(el, (), ("model", "alias", "driver", "address"))
    if (d := p.one(found, "driver")) is not None:
        raise p.fail(
            VIDEO_UNSUPPORTED, d, "video <driver> options (vhost-user backend, VGA "
            "configuration, virtio options) are not supported by tapvirt", "remove <driver>",
        )
    m = p.one(found, "model")
    model, primary = DEFAULT_VIDEO, False
    ram = vram = vram64 = vgamem = 0
    heads = 1
    resolution = None
    if m is not None:
        mf = p.shape(m, ("type", "vram", "ram", "vram64", "vgamem", "heads", "primary"),
                     ("acceleration", "resolution"), required_attrs=("type",))
        if (acc := p.one(mf, "acceleration")) is not None:
            raise p.fail(
                VIDEO_UNSUPPORTED, acc, "3D/2D acceleration needs virgl and a host GPU "
                "render node", "remove <acceleration>",
            )
        raw = m.get("type")
        if raw in ("xen", "vbox", "parallels", "gop", "default"):
            raise p.fail(
                VIDEO_UNSUPPORTED, m, f"video model '{raw}' does not exist in QEMU",
                "use one of: " + ", ".join(v.value for v in VideoModel), attr="type",
            )
        if raw is not None:
            model = p.enum(m, "type", VideoModel)
        sizes = {}
        for attr in ("vram", "ram", "vram64", "vgamem"):
            if m.get(attr) is not None:
                sizes[attr] = p.uint(m, attr, 0, MAX_VIDEO_KIB)
        ram, vram = sizes.get("ram", 0), sizes.get("vram", 0)
        vram64, vgamem = sizes.get("vram64", 0), sizes.get("vgamem", 0)
        if m.get("heads") is not None:
            heads = p.uint(m, "heads", 1, MAX_HEADS)
        if m.get("primary") is not None:
            if m.get("primary") not in ("yes", "no"):
                raise p.fail(
                    E.INVALID_VALUE, m, f"Invalid value for attribute 'primary' in element "
                    f"'model': '{m.get('primary', '')[:40]}'.", "use primary='yes' or leave "
                    "it out", attr="primary",
                )
            primary = m.get("primary") == "yes"
        if (r := p.one(mf, "resolution")) is not None:
            p.shape(r, ("x", "y"), required_attrs=("x", "y"))
            resolution = (p.uint(r, "x", 1, 16384), p.uint(r, "y", 1, 16384))
        if model is not VideoModel.QXL:
            for attr, value in (("ram", ram), ("vram64", vram64), ("vgamem", vgamem)):
                if value:
                    raise p.fail(
                        E.INVALID_VALUE, m,
                        f"{attr} attribute only supported for video type qxl",
                        f"remove {attr}=", attr=attr,
                    )
    from tapvirt.conf.devices.common import parse_alias as _alias

    alias = _alias(p, p.one(found, "alias"), "video0")  # renumbered by position later
    address = parse_device_address(
        p, p.one(found, "address"),
        () if model in (VideoModel.NONE, VideoModel.RAMFB) else (AddressType.PCI,),
        f"a video card of type '{model}'",
    )
    if model is VideoModel.NONE:
        # libvirt clears everything it would fill in for 'none' (only a user alias stays)
        return Video(VideoModel.NONE, heads=0, alias=alias)
    if not vram:
        vram = _DEFAULT_VRAM.get(model, 0)
    if model is VideoModel.QXL:
        ram = ram or QXL_DEFAULT_RAM
        vgamem = vgamem or QXL_DEFAULT_VGAMEM
    return Video(
        model=model, vram=_pow2(vram), ram=_pow2(ram), vram64=vram64, vgamem=vgamem,
        heads=heads, primary=primary, resolution=resolution, alias=alias, address=address,
    )


def _pow2(kib: int) -> int:
    """libvirt rounds ram and vram up to a power of two (VIR_ROUND_UP_POWER_OF_TWO)."""
    return 0 if kib <= 0 else 1 << (kib - 1).bit_length()


def arrange_videos(
    p: Reader, els: list[etree._Element], videos: list[Video]
) -> tuple[Video, ...]:
    """libvirt's order: a primary='yes' device first, the first device marked primary,
    a 'none' model alone, secondary devices only of models QEMU has as secondary."""
    from dataclasses import replace

    if not videos:
        return ()
    primaries = [i for i, v in enumerate(videos) if v.primary]
    if len(primaries) > 1:
        raise p.fail(
            E.INVALID_VALUE, els[primaries[1]], "Only one primary video device is supported",
            "remove primary='yes' from all but one <video>",
        )
    order = list(range(len(videos)))
    if primaries:
        order.remove(primaries[0])
        order.insert(0, primaries[0])
    out: list[Video] = []
    for pos, i in enumerate(order):
        v = videos[i]
        if v.model is VideoModel.NONE and len(videos) > 1:
            raise p.fail(
                E.INVALID_VALUE, els[i], "a 'none' video type must be the only video device "
                "defined for the domain", "remove the other <video> devices or this one",
            )
        if pos and v.model.primary_only:
            raise p.fail(
                E.INVALID_VALUE, els[i], f"video type {v.model} is only valid as primary "
                "video device", "use model type 'qxl' or 'virtio' for a secondary card, or "
                "make this one the first <video>",
            )
        alias = v.alias if v.alias and v.alias.startswith("ua-") else f"video{pos}"
        primary = pos == 0 and v.model is not VideoModel.NONE
        out.append(replace(v, primary=primary, alias=alias))
    return tuple(out)


def format_video(v: Video, ind: str, live: bool) -> list[str]:
    from tapvirt.conf.xmlout import a as _a

    attrs = ""
    for name, value in (("ram", v.ram), ("vram", v.vram), ("vram64", v.vram64),
                        ("vgamem", v.vgamem), ("heads", v.heads)):
        if value:
            attrs += f" {name}='{value}'"
    if v.primary:
        attrs += " primary='yes'"
    out = [f"{ind}<video>"]
    model = f"{ind}  <model type={_a(v.model)}{attrs}"
    if v.resolution is not None:
        out += [model + ">", f"{ind}    <resolution x='{v.resolution[0]}' "
                f"y='{v.resolution[1]}'/>", f"{ind}  </model>"]
    else:
        out.append(model + "/>")
    out += _alias_lines(v.alias, ind, live) + address_lines(v.address, ind)
    out.append(f"{ind}</video>")
    return out


def implicit_video(graphics: tuple[Graphics, ...], videos: tuple[Video, ...]) -> Video | None:
    """libvirt's virDomainDefAddImplicitVideo: a domain with graphics but no video gets
    the default card (cirrus on x86), so there is something to show."""
    if not graphics or videos:
        return None
    return Video(DEFAULT_VIDEO, vram=_DEFAULT_VRAM[DEFAULT_VIDEO], primary=True, alias="video0")
