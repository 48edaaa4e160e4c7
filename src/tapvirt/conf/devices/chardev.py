"""Character devices: `<serial>` and `<console>` (model, parse, rules, canonical format).

libvirt's console rules (virDomainDefAddConsoleCompat) on x86: the first `<console>` of
target type serial *is* serial port 0 — it becomes that port when there is no `<serial>`,
and when there is one it describes that port (a console whose source differs, as in
KubeVirt's XML, is replaced by serial 0's description); a domain with serial ports and no
such console gets one. Further consoles are virtio consoles (`virtconsole`)."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING

from tapvirt.conf import errors as E
from tapvirt.conf.rules import MAX_PORT
from tapvirt.conf.xmlout import IND, Writer, a

if TYPE_CHECKING:
    from lxml import etree

    from tapvirt.conf.xml import Reader


class ChardevKind(StrEnum):
    SERIAL = "serial"
    CONSOLE = "console"


class ChardevType(StrEnum):
    PTY = "pty"
    FILE = "file"
    UNIX = "unix"
    NULL = "null"


@dataclass(frozen=True)
class Chardev:
    kind: ChardevKind
    type: ChardevType
    path: str | None = None  # file and unix only
    unix_listen: bool = True  # unix: <source mode='bind'> (True) or 'connect'
    port: int = 0  # <target port='N'/>
    virtio: bool = False  # a console with <target type='virtio'/>: a virtconsole port
    # <log file='...'/>: QEMU copies everything the guest writes here (logfile=), so the
    # console log keeps recording while someone is attached to a pty or socket
    log_file: str | None = None
    log_append: bool = False


def parse_chardevs(
    r: Reader, els: list[etree._Element], kind: ChardevKind
) -> tuple[Chardev, ...]:
    parsed: list[tuple[etree._Element, ChardevType, str | None, bool, int | None, bool]] = []
    logs: dict[etree._Element, tuple[str, bool]] = {}
    for el in els:
        found = r.shape(el, ("type",), ("source", "target", "log"), required_attrs=("type",))
        ctype = r.enum(el, "type", ChardevType)
        path, listen = None, True
        s = r.one(found, "source")
        if ctype is ChardevType.PTY and s is not None and r.live:
            # the live XML shows the pty QEMU made (<source path='/dev/pts/N'/>)
            r.shape(s, ("path",))
            path = s.get("path")
        elif ctype in (ChardevType.FILE, ChardevType.UNIX):
            if s is None:
                raise r.fail(
                    E.MISSING_ELEMENT, el, f"a {kind} of type '{ctype}' needs <source path=...>",
                    f"add <source path='/path'/> inside <{kind}>",
                )
            r.shape(s, ("path", "mode") if ctype is ChardevType.UNIX else ("path",),
                    required_attrs=("path",))
            path = r.abspath(s, "path", s.get("path", ""))
            if ctype is ChardevType.UNIX:
                mode = s.get("mode", "connect")
                if mode not in ("bind", "connect"):
                    raise r.fail(
                        E.INVALID_VALUE, s,
                        f"Invalid value for attribute 'mode' in element 'source': '{mode[:40]}'.",
                        "use mode='bind' (QEMU listens) or mode='connect'", attr="mode",
                    )
                listen = mode == "bind"
        elif s is not None:
            raise r.fail(
                E.NOT_FOR_TYPE, s, f"a {kind} of type '{ctype}' takes no <source>",
                "remove <source> (the pty path is chosen at start)"
                if ctype is ChardevType.PTY else "remove <source>",
            )
        port = None
        virtio = False
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
                r.shape(t, ("port",))
            if t.get("port") is not None:
                port = r.uint(t, "port", 0, MAX_PORT)
        if (lg := r.one(found, "log")) is not None:
            r.shape(lg, ("file", "append"), required_attrs=("file",))
            append = lg.get("append", "off")
            if append not in ("on", "off"):
                raise r.fail(
                    E.INVALID_VALUE, lg,
                    f"Invalid value for attribute 'append' in element 'log': '{append[:40]}'.",
                    "use append='on' or append='off'", attr="append",
                )
            logs[el] = (r.abspath(lg, "file", lg.get("file", "")), append == "on")
        if kind is ChardevKind.CONSOLE:
            # libvirt numbers consoles by position and ignores a given port (a serial
            # console's port 0 and a virtio console's port 0 are different things)
            port = len(parsed)
        parsed.append((el, ctype, path, listen, port, virtio))
    taken: dict[int, etree._Element] = {}
    for el, _, _, _, port, _ in parsed:
        if port is not None:
            if port in taken:
                raise r.fail(
                    E.DUPLICATE_TARGET, el,
                    f"{kind} port {port} is used twice (first at line {taken[port].sourceline})",
                    "give each a different <target port='N'/>",
                )
            taken[port] = el
    out: list[Chardev] = []
    for el, ctype, path, listen, given, virtio in parsed:
        port = given
        if port is None:  # libvirt's way: the lowest free port
            port = next(n for n in range(len(parsed) + 1) if n not in taken)
            taken[port] = el
        out.append(Chardev(kind=kind, type=ctype, path=path, unix_listen=listen, port=port,
                           virtio=virtio,
                           log_file=logs[el][0] if el in logs else None,
                           log_append=el in logs and logs[el][1]))
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


def format_chardev(c: Chardev, w: Writer) -> None:
    i2, i3 = IND * 2, IND * 3
    w(f"{i2}<{c.kind} type={a(c.type)}>")
    if c.type is ChardevType.UNIX and c.path is not None:
        mode = "bind" if c.unix_listen else "connect"
        w(f"{i3}<source mode='{mode}' path={a(c.path)}/>")
    elif c.type in (ChardevType.FILE, ChardevType.PTY) and c.path is not None:
        w(f"{i3}<source path={a(c.path)}/>")
    if c.log_file is not None:
        w(f"{i3}<log file={a(c.log_file)} append={a('on' if c.log_append else 'off')}/>")
    if c.kind is ChardevKind.CONSOLE:
        w(f"{i3}<target type={a('virtio' if c.virtio else 'serial')} port='{c.port}'/>")
    else:
        w(f"{i3}<target port='{c.port}'/>")
    w(f"{i2}</{c.kind}>")
