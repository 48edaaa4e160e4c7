"""Character devices: `<serial>` and `<console>` (model, parse, rules, canonical format).

libvirt's console rules (virDomainDefAddConsoleCompat) on x86: the first `<console>` of
target type serial *is* serial port 0 — it becomes that port when there is no `<serial>`,
and when there is one it describes that port (a console whose source differs, as in
KubeVirt's XML, is replaced by serial 0's description); a domain with serial ports and no
such console gets one. Further consoles are virtio consoles (`virtconsole`)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING

from tapvirt.conf import errors as E
from tapvirt.conf.rules import MAX_PORT
from tapvirt.conf.xmlout import IND, Writer, a, attrs
from tapvirt.errors import define

if TYPE_CHECKING:
    from lxml import etree

    from tapvirt.conf.xml import Found, Reader
    from tapvirt.errors import TapvirtError


class ChardevKind(StrEnum):
    SERIAL = "serial"
    CONSOLE = "console"


CHARDEV_UNSUPPORTED = define(
    "chardev-unsupported",
    "a <serial>/<console> source tapvirt's QEMU cannot use (stdio, spiceport, TLS, ...)",
    layer="conf",
)


class ChardevType(StrEnum):
    PTY = "pty"
    FILE = "file"
    UNIX = "unix"
    NULL = "null"
    TCP = "tcp"
    UDP = "udp"
    DEV = "dev"  # a host character device (a real serial port)
    PIPE = "pipe"  # a FIFO pair PATH.in/PATH.out (or one FIFO PATH)
    VC = "vc"  # a text console on QEMU's display


class TcpProtocol(StrEnum):
    RAW = "raw"
    TELNET = "telnet"


# libvirt's types that tapvirt refuses by name, with why and what to use instead
_REFUSED: dict[str, tuple[str, str]] = {
    "stdio": ("QEMU runs detached from any terminal, so its stdio is nobody's",
              "use type='pty' and attach with `tapvirt console NAME`"),
    "spiceport": ("tapvirt does not connect a serial port to a SPICE port channel",
                  "use type='pty' or type='unix'"),
    "spicevmc": ("a spicevmc chardev is a SPICE agent channel, not a serial port",
                 "use <channel type='spicevmc'> for the agent, and type='pty' here"),
    "qemu-vdagent": ("qemu-vdagent is a guest-agent channel, not a serial port",
                     "use type='pty' here"),
    "dbus": ("a D-Bus chardev needs graphics type='dbus', which tapvirt does not run",
             "use type='pty' or type='unix'"),
    "nmdm": ("nmdm is FreeBSD's null-modem device (bhyve), not available to QEMU on Linux",
             "use type='pty'"),
}
_SERVICE_RE = re.compile(r"[0-9]{1,5}|[A-Za-z][A-Za-z0-9_-]{0,31}\Z")
_HOST_RE = re.compile(r"[A-Za-z0-9_.:%\[\]-]{1,253}\Z")


@dataclass(frozen=True)
class Chardev:
    kind: ChardevKind
    type: ChardevType
    path: str | None = None  # file, unix, dev and pipe; a pty's path in the live XML
    listen: bool = True  # unix/tcp: <source mode='bind'> (True) or 'connect'
    port: int = 0  # <target port='N'/>
    virtio: bool = False  # a console with <target type='virtio'/>: a virtconsole port
    # <log file='...'/>: QEMU copies everything the guest writes here (logfile=), so the
    # console log keeps recording while someone is attached to a pty or socket
    log_file: str | None = None
    log_append: bool = False
    append: bool | None = None  # file: <source append='on|off'> (None: not given)
    host: str | None = None  # tcp: the host; udp: the host to send to (connect)
    service: str | None = None  # tcp: the port; udp: the port to send to (connect)
    bind_host: str | None = None  # udp: the local address (<source mode='bind'>)
    bind_service: str | None = None  # udp: the local port
    protocol: TcpProtocol = TcpProtocol.RAW  # tcp: <protocol type=...>
    tls: bool | None = None  # tcp: <source tls='no'> as given (tls='yes' is refused)
    # a serial's <target type='isa-serial'><model name='isa-serial'/></target> as libvirt's
    # dumpxml writes it (the x86 default, kept when given)
    isa_target: bool = False


@dataclass
class _Source:
    path: str | None = None
    listen: bool = True
    append: bool | None = None
    host: str | None = None
    service: str | None = None
    bind_host: str | None = None
    bind_service: str | None = None
    protocol: TcpProtocol = TcpProtocol.RAW
    tls: bool | None = None


def _on_off(r: Reader, el: etree._Element, attr: str) -> bool | None:
    raw = el.get(attr)
    if raw is None:
        return None
    if raw not in ("on", "off"):
        raise r.fail(
            E.INVALID_VALUE, el,
            f"Invalid value for attribute '{attr}' in element '{el.tag}': '{raw[:40]}'.",
            f"use {attr}='on' or {attr}='off'", attr=attr,
        )
    return raw == "on"


def _mode(r: Reader, s: etree._Element) -> bool:
    """<source mode=...>: True for bind (QEMU listens), False for connect (the default)."""
    mode = s.get("mode", "connect")
    if mode not in ("bind", "connect"):
        raise r.fail(
            E.INVALID_VALUE, s,
            f"Invalid value for attribute 'mode' in element 'source': '{mode[:40]}'.",
            "use mode='bind' (QEMU listens) or mode='connect'", attr="mode",
        )
    return mode == "bind"


def _endpoint(r: Reader, s: etree._Element) -> tuple[str | None, str | None]:
    host, service = s.get("host"), s.get("service")
    if host is not None and not _HOST_RE.match(host):
        raise r.fail(
            E.INVALID_VALUE, s, f"host {host[:40]!r} is not a host name or IP address",
            "use a name or address such as host='127.0.0.1'", attr="host",
        )
    if service is not None and (not _SERVICE_RE.match(service)
                                or (service.isdigit() and int(service) > MAX_PORT)):
        raise r.fail(
            E.INVALID_VALUE, s, f"service {service[:40]!r} is not a port number (0-65535) "
            "or service name", "use a port number such as service='4555'", attr="service",
        )
    return host, service


def _missing(r: Reader, el: etree._Element, what: str) -> TapvirtError:
    return r.fail(
        E.MISSING_ATTRIBUTE, el, f"Missing source {what} attribute for char device",
        f"add <source {what}='...'/> inside <{el.tag}>",
    )


def _tcp(r: Reader, el: etree._Element, s: etree._Element | None,
         proto: etree._Element | None) -> _Source:
    if s is None:
        raise _missing(r, el, "host")
    r.shape(s, ("mode", "host", "service", "tls"))
    out = _Source(listen=_mode(r, s))
    out.host, out.service = _endpoint(r, s)
    if out.host is None:
        raise _missing(r, el, "host")
    if out.service is None:
        raise _missing(r, el, "service")
    tls = s.get("tls")
    if tls == "yes":
        raise r.fail(
            CHARDEV_UNSUPPORTED, s, "a TLS chardev needs x509 certificates for QEMU "
            "(libvirt's chardev_tls_x509_cert_dir); tapvirt sets up no TLS",
            "remove tls='yes' (or tunnel the port, e.g. with stunnel or ssh -L)", attr="tls",
        )
    if tls is not None and tls != "no":
        raise r.fail(
            E.INVALID_VALUE, s,
            f"Invalid value for attribute 'tls' in element 'source': '{tls[:40]}'.",
            "use tls='no'", attr="tls",
        )
    out.tls = False if tls == "no" else None
    if proto is not None:
        r.shape(proto, ("type",))
        raw = proto.get("type", "raw")
        if raw in ("telnets", "tls"):
            raise r.fail(
                CHARDEV_UNSUPPORTED, proto, f"protocol '{raw}' needs TLS, which tapvirt "
                "does not set up for chardevs", "use <protocol type='raw'/> or 'telnet'",
                attr="type",
            )
        if raw not in ("raw", "telnet"):
            raise r.fail(
                E.INVALID_VALUE, proto, f"Unknown protocol '{raw[:40]}'",
                "use <protocol type='raw'/> or 'telnet'", attr="type",
            )
        out.protocol = TcpProtocol(raw)
    return out


def _udp(r: Reader, el: etree._Element, sources: list[etree._Element]) -> _Source:
    """libvirt's virDomainChrSourceDefParseUDP: one bind and one connect source; a second
    source of a mode already seen is ignored, as libvirt does."""
    if len(sources) > 2:
        raise r.fail(
            E.DUPLICATE_ELEMENT, sources[2],
            "only two source elements are allowed for character device",
            "keep one <source mode='bind'> and one <source mode='connect'>",
        )
    out = _Source()
    seen: set[bool] = set()
    for s in sources:
        r.shape(s, ("mode", "host", "service"))
        bind = _mode(r, s)
        if bind in seen:
            continue
        seen.add(bind)
        host, service = _endpoint(r, s)
        if bind:
            out.bind_host, out.bind_service = host, service
        else:
            out.host, out.service = host, service
    if out.service is None:
        raise _missing(r, el, "service")
    return out


def _source(r: Reader, el: etree._Element, found: Found, ctype: ChardevType,
            kind: ChardevKind) -> _Source:
    sources = found.get("source", [])
    if len(sources) > 1 and ctype is not ChardevType.UDP:
        raise r.fail(
            E.DUPLICATE_ELEMENT, sources[1],
            "only one source element is allowed for character device",
            "keep one <source> (only udp takes two: bind and connect)",
        )
    s = sources[0] if sources else None
    proto = r.one(found, "protocol")
    if proto is not None and ctype is not ChardevType.TCP:
        raise r.fail(
            E.NOT_FOR_TYPE, proto, f"a {kind} of type '{ctype}' takes no <protocol>",
            "remove <protocol> (it is for type='tcp')",
        )
    if ctype is ChardevType.TCP:
        return _tcp(r, el, s, proto)
    if ctype is ChardevType.UDP:
        return _udp(r, el, sources)
    if ctype is ChardevType.PTY and s is not None and r.live:
        # the live XML shows the pty QEMU made (<source path='/dev/pts/N'/>)
        r.shape(s, ("path",))
        return _Source(path=s.get("path"))
    if ctype in (ChardevType.FILE, ChardevType.UNIX, ChardevType.DEV, ChardevType.PIPE):
        if s is None:
            raise r.fail(
                E.MISSING_ELEMENT, el, f"a {kind} of type '{ctype}' needs <source path=...>",
                f"add <source path='/path'/> inside <{kind}>",
            )
        attrs = {ChardevType.UNIX: ("path", "mode"), ChardevType.FILE: ("path", "append")}
        r.shape(s, attrs.get(ctype, ("path",)), required_attrs=("path",))
        out = _Source(path=r.abspath(s, "path", s.get("path", "")))
        if ctype is ChardevType.UNIX:
            out.listen = _mode(r, s)
        if ctype is ChardevType.FILE:
            out.append = _on_off(r, s, "append")
        return out
    if s is not None:
        raise r.fail(
            E.NOT_FOR_TYPE, s, f"a {kind} of type '{ctype}' takes no <source>",
            "remove <source> (the pty path is chosen at start)"
            if ctype is ChardevType.PTY else "remove <source>",
        )
    return _Source()


ISA_SERIAL_PORTS = 4  # QEMU: "Max. supported number of ISA serial ports is 4."
_SERIAL_TARGETS = {
    "usb-serial": "a USB serial port (usb-serial)", "pci-serial": "a PCI serial port",
    "isa-debug": "QEMU's ISA debug console (isa-debugcon)",
}


def _serial_target(r: Reader, t: etree._Element) -> bool:
    """A serial's <target type= ><model name= /></target>: only the x86 default,
    isa-serial, is run; True when it is written."""
    found = r.shape(t, ("type", "port"), ("model",))
    ttype = t.get("type")
    m = r.one(found, "model")
    if m is not None:
        r.shape(m, ("name",), required_attrs=("name",))
    model = None if m is None else m.get("name")
    for what, value in (("type", ttype), ("model", model)):
        if value is None or value == "isa-serial":
            continue
        known = _SERIAL_TARGETS.get(value.replace("isa-debugcon", "isa-debug"))
        raise r.fail(
            CHARDEV_UNSUPPORTED if known else E.INVALID_VALUE,
            t if what == "type" or m is None else m,
            f"serial target {what} '{value[:40]}': {known} is not supported by tapvirt"
            if known else f"Invalid value for attribute '{'type' if what == 'type' else 'name'}'"
            f" in element '{'target' if what == 'type' else 'model'}': '{value[:40]}'.",
            "use <target type='isa-serial'> (the x86 serial port) or leave type out",
            attr="type" if what == "type" else "name",
        )
    if m is not None and ttype is None:
        raise r.fail(
            E.INVALID_VALUE, m, "a serial <model> needs <target type='isa-serial'>",
            "add type='isa-serial' to <target>",
        )
    return ttype is not None


def parse_chardevs(
    r: Reader, els: list[etree._Element], kind: ChardevKind
) -> tuple[Chardev, ...]:
    parsed: list[tuple[etree._Element, ChardevType, _Source, int | None, bool, bool]] = []
    logs: dict[etree._Element, tuple[str, bool]] = {}
    for el in els:
        if (raw := el.get("type")) in _REFUSED:
            cause, fix = _REFUSED[raw]
            raise r.fail(CHARDEV_UNSUPPORTED, el, f"{kind} type '{raw}': {cause}", fix,
                         attr="type")
        found = r.shape(el, ("type",), ("source", "protocol", "target", "log"),
                        multi=("source",), required_attrs=("type",))
        ctype = r.enum(el, "type", ChardevType)
        src = _source(r, el, found, ctype, kind)
        port = None
        virtio = isa = False
        if (t := r.one(found, "target")) is not None:
            if kind is ChardevKind.CONSOLE:
                r.shape(t, ("type", "port"))
                if t.get("type", "serial") not in ("serial", "virtio"):
                    raise r.fail(
                        E.INVALID_VALUE, t,
                        f"Invalid value for attribute 'type' in element 'target': "
                        f"'{t.get('type', '')[:40]}'.", "use type='serial' or type='virtio'",
                        attr="type",
                    )
                virtio = t.get("type") == "virtio"
            else:
                isa = _serial_target(r, t)
            if t.get("port") is not None:
                port = r.uint(t, "port", 0, MAX_PORT)
        if (lg := r.one(found, "log")) is not None:
            r.shape(lg, ("file", "append"), required_attrs=("file",))
            append = _on_off(r, lg, "append")
            logs[el] = (r.abspath(lg, "file", lg.get("file", "")), append is True)
        if kind is ChardevKind.CONSOLE:
            # libvirt numbers consoles by position and ignores a given port (a serial
            # console's port 0 and a virtio console's port 0 are different things)
            port = len(parsed)
        parsed.append((el, ctype, src, port, virtio, isa))
    taken: dict[int, etree._Element] = {}
    for el, _, _, port, _, _ in parsed:
        if port is not None:
            if port in taken:
                raise r.fail(
                    E.DUPLICATE_TARGET, el,
                    f"{kind} port {port} is used twice (first at line {taken[port].sourceline})",
                    "give each a different <target port='N'/>",
                )
            taken[port] = el
    out: list[Chardev] = []
    for el, ctype, src, given, virtio, isa in parsed:
        port = given
        if port is None:  # libvirt's way: the lowest free port
            port = next(n for n in range(len(parsed) + 1) if n not in taken)
            taken[port] = el
        if kind is ChardevKind.SERIAL and port >= ISA_SERIAL_PORTS:
            raise r.fail(
                E.INVALID_VALUE, el, f"serial port {port} does not exist: QEMU's PC has "
                f"{ISA_SERIAL_PORTS} ISA serial ports (0-{ISA_SERIAL_PORTS - 1})",
                f"use at most {ISA_SERIAL_PORTS} <serial> ports, <target port='0'> to "
                f"'{ISA_SERIAL_PORTS - 1}' (more: virtio consoles, <console><target "
                "type='virtio'/>)",
            )
        out.append(Chardev(kind=kind, type=ctype, path=src.path, listen=src.listen,
                           port=port, virtio=virtio,
                           log_file=logs[el][0] if el in logs else None,
                           log_append=el in logs and logs[el][1],
                           append=src.append, host=src.host, service=src.service,
                           bind_host=src.bind_host, bind_service=src.bind_service,
                           protocol=src.protocol, tls=src.tls, isa_target=isa))
    return tuple(out)


def console_rules(
    r: Reader, els: list[etree._Element], consoles: tuple[Chardev, ...],
    serials: tuple[Chardev, ...],
) -> tuple[tuple[Chardev, ...], tuple[Chardev, ...]]:
    """libvirt's virDomainDefAddConsoleCompat: (serials, consoles) after its rewrite."""
    from dataclasses import replace

    for el, c in zip(els[1:], consoles[1:], strict=True):
        if not c.virtio:
            raise r.fail(
                E.INVALID_VALUE, el, "Only the first console can be a serial port",
                "give the other consoles <target type='virtio'/>, or make them <serial> ports",
            )
    cons = list(consoles)
    if cons and not cons[0].virtio:
        if not serials:  # the console becomes serial port 0
            serials = (replace(cons[0], kind=ChardevKind.SERIAL, port=0),)
        # it describes serial 0 (a different source is dropped, as libvirt does)
        cons[0] = replace(serials[0], kind=ChardevKind.CONSOLE, port=0)
    elif serials:  # a stub console for serial port 0, as libvirt adds
        cons.insert(0, replace(serials[0], kind=ChardevKind.CONSOLE, port=0))
    # consoles are numbered by position (libvirt keeps the old numbers after inserting the
    # stub and renumbers on the next parse; numbering now keeps dumpxml a fixed point)
    return serials, tuple(replace(c, port=n) for n, c in enumerate(cons))


def _source_lines(c: Chardev, ind: str) -> list[str]:
    """libvirt's virDomainChrSourceDefFormat: <source>(s), <protocol>, <log>."""
    def onoff(v: bool | None) -> str | None:
        return None if v is None else ("on" if v else "off")

    out: list[str] = []
    if c.type is ChardevType.UNIX and c.path is not None:
        mode = "bind" if c.listen else "connect"
        out.append(f"{ind}<source mode='{mode}' path={a(c.path)}/>")
    elif c.type in (ChardevType.FILE, ChardevType.DEV, ChardevType.PIPE) or (
            c.type is ChardevType.PTY and c.path is not None):
        out.append(f"{ind}<source" + attrs(path=c.path, append=onoff(c.append)) + "/>")
    elif c.type is ChardevType.TCP:
        mode = "bind" if c.listen else "connect"
        tls = None if c.tls is None else ("yes" if c.tls else "no")
        out.append(f"{ind}<source mode='{mode}'"
                   + attrs(host=c.host, service=c.service, tls=tls) + "/>")
        out.append(f"{ind}<protocol type={a(c.protocol)}/>")
    elif c.type is ChardevType.UDP:
        if c.bind_host is not None or c.bind_service is not None:
            out.append(f"{ind}<source mode='bind'"
                       + attrs(host=c.bind_host, service=c.bind_service) + "/>")
        out.append(f"{ind}<source mode='connect'"
                   + attrs(host=c.host, service=c.service) + "/>")
    if c.log_file is not None:
        out.append(f"{ind}<log file={a(c.log_file)} append={a(onoff(c.log_append) or '')}/>")
    return out


def format_chardev(c: Chardev, w: Writer) -> None:
    i2, i3 = IND * 2, IND * 3
    w(f"{i2}<{c.kind} type={a(c.type)}>")
    for line in _source_lines(c, i3):
        w(line)
    if c.kind is ChardevKind.CONSOLE:
        w(f"{i3}<target type={a('virtio' if c.virtio else 'serial')} port='{c.port}'/>")
    elif c.isa_target:
        w(f"{i3}<target type='isa-serial' port='{c.port}'>")
        w(f"{i3}{IND}<model name='isa-serial'/>")
        w(f"{i3}</target>")
    else:
        w(f"{i3}<target port='{c.port}'/>")
    w(f"{i2}</{c.kind}>")
