"""Graphics at run time: TCP ports for `<graphics>` before a start, the display URI
(`tapvirt domdisplay`) and screenshots (`tapvirt screenshot`) of a running guest.

Ports. A display with autoport and no listen address is a UNIX
socket in the runtime directory (tapvirt.qemu.argv.graphics.runtime_listen) and needs no
port. For VNC and SPICE with autoport on an address the launcher chooses the port, as
libvirt does: under a lock shared by every tapvirt launcher of the user
(`<runtime root>/graphics-ports.lock`), it skips ports another launcher reserved in
the last `RESERVE_S` seconds (the window until that QEMU has bound them) and ports that
are bound, and reserves its own. Two concurrent starts therefore never get the same
port; a port QEMU has bound is seen as bound. (QEMU's own VNC search, `:0,to=99`, is not
used: it cannot see the ports reserved for a SPICE display another launcher is starting,
and took one of them in a CI run.) A fixed port that is bound already is
refused before QEMU runs (`graphics-port-in-use`), so nothing is left running.

URIs are what `virsh domdisplay` prints: `vnc://HOST:DISPLAY` (the port minus 5900),
`spice://HOST:PORT`, `vnc+unix:///PATH`, `spice+unix:///PATH`, read back from QEMU
(`query-vnc`, `query-spice`) so an automatic port is the one QEMU really bound.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tapvirt.errors import TapvirtError, define

if TYPE_CHECKING:
    from tapvirt.conf.devices.graphics import Graphics
    from tapvirt.conf.model import Domain

_L = "domains"
GRAPHICS_PORT_IN_USE = define(
    "graphics-port-in-use",
    "a <graphics> fixed TCP port (or every automatic one) is already bound on the host",
    layer=_L,
)
NO_GRAPHICS = define("no-graphics", "the domain has no (such) <graphics> display", layer=_L)
SCREENSHOT_FAILED = define(
    "screenshot-failed", "QEMU could not write the screenshot (no display, or the file)",
    layer=_L,
)

RESERVE_S = 120.0  # a reservation outlives any start (start timeout + slack)
PORT_MIN, PORT_MAX = 5900, 65535  # libvirt's remote_display_port range
VNC_BASE = 5900


def _bindable(address: str, port: int) -> bool:
    """QEMU binds with SO_REUSEADDR; so does this test (TIME_WAIT is not 'in use')."""
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((address, port))
        except OSError as exc:
            if exc.errno in (errno.EADDRINUSE, errno.EACCES):
                return False
            raise
    return True


def _tcp(g: Graphics) -> bool:
    from tapvirt.qemu.argv.graphics import is_tcp

    return is_tcp(g)


def _address(g: Graphics) -> str:
    from tapvirt.conf.devices.graphics import DEFAULT_LISTEN_ADDRESS

    return g.listen.address or DEFAULT_LISTEN_ADDRESS


def _port_error(g: Graphics, port: int, cause: str, fix: str) -> TapvirtError:
    return TapvirtError(GRAPHICS_PORT_IN_USE, f"<graphics type='{g.type}'> port {port}",
                        cause, fix)


def check_fixed_ports(dom: Domain) -> None:
    """Refuse a start whose fixed graphics port is bound (before QEMU runs)."""
    for g in dom.devices.graphics:
        if _tcp(g) and not g.autoport and g.port is not None:
            address = _address(g)
            if not _bindable(address, g.port):
                raise _port_error(
                    g, g.port, f"{address}:{g.port} is already in use by another program "
                    "or guest",
                    "choose another port=, or write autoport='yes' (or "
                    "<listen type='socket'/>) so tapvirt picks a free one")


@contextlib.contextmanager
def _ports_lock(root: Path) -> Iterator[dict[str, float]]:
    """The reservations {port: expiry}, read and written under an exclusive flock."""
    path = root / "graphics-ports.lock"
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        with os.fdopen(os.dup(fd), "r+", encoding="utf-8") as f:
            try:
                data = json.loads(f.read() or "{}")
            except ValueError:
                data = {}
            now = time.time()
            held = {k: float(v) for k, v in data.items()
                    if isinstance(v, (int, float)) and v > now}
            yield held
            f.seek(0)
            f.truncate()
            f.write(json.dumps(held))
    finally:
        os.close(fd)  # releases the flock


def autoport_ports(dom: Domain, root: Path) -> list[int]:
    """A free, reserved TCP port for each VNC or SPICE display with autoport on an
    address, in document order."""
    wanted = [g for g in dom.devices.graphics if g.autoport and _tcp(g)]
    if not wanted:
        return []
    out: list[int] = []
    with _ports_lock(root) as held:
        for g in wanted:
            address = _address(g)
            port = next((p for p in range(PORT_MIN, PORT_MAX + 1)
                         if str(p) not in held and p not in out and _bindable(address, p)),
                        None)
            if port is None:
                raise _port_error(g, PORT_MIN, "no TCP port from 5900 up is free",
                                  "stop a guest, or use <listen type='socket'/>")
            held[str(port)] = time.time() + RESERVE_S
            out.append(port)
    return out


# -- domdisplay, screenshot ------------------------------------------------------------------

def display_uri(g: Graphics, info: dict[str, Any], passwd: str | None = None) -> str:
    """virsh domdisplay's URI for one display, from QEMU's query-vnc / query-spice."""
    scheme = g.type.value
    if not _tcp(g):
        path = str(info.get("service") if scheme == "vnc" else info.get("host") or "")
        return f"{scheme}+unix://{path}"
    host = str(info.get("host") or _address(g))
    if host in ("0.0.0.0", "::"):  # noqa: S104 (a comparison, not a bind)
        host = "localhost"  # virsh: a wildcard listen is reached on the local host
    if ":" in host:
        host = f"[{host}]"
    port = int(str(info.get("service") if scheme == "vnc" else info.get("port")) or 0)
    if scheme == "vnc":
        port -= VNC_BASE  # virsh writes the VNC display number, as viewers expect
    auth = f":{passwd}@" if passwd else ""
    return f"{scheme}://{auth}{host}:{port}"


def _pick(dom: Domain, name: str, gtype: str | None) -> Graphics:
    for g in dom.devices.graphics:
        if gtype is None or g.type.value == gtype:
            return g
    what = f"a {gtype} display" if gtype else "a graphics display"
    raise TapvirtError(NO_GRAPHICS, f"domain {name}", f"it has no {what}",
                       "add <graphics type='vnc'/> (or type='spice') to its definition, "
                       "then restart it")


def domdisplay(name: str, *, gtype: str | None = None,
               include_password: bool = False) -> str:
    """The URI of the running guest's first (or first `gtype`) display."""
    from tapvirt.domains import live

    dd, _ = live.supervised(name)
    dom = live.live_domain(dd)
    g = _pick(dom, name, gtype)
    if g.listen.type.value == "none":
        raise TapvirtError(NO_GRAPHICS, f"domain {name}",
                           f"its {g.type} display listens nowhere (<listen type='none'/>)",
                           "give it <listen type='socket'/> or type='address', then restart")
    info = live.qmp_read(name, "query-vnc" if g.type.value == "vnc" else "query-spice")
    passwd = g.passwd if include_password else None  # the live XML keeps it (0600)
    return display_uri(g, info if isinstance(info, dict) else {}, passwd)


def screenshot(name: str, file: str | None = None, *, screen: int = 0) -> Path:
    """Write a PNG of the guest's display (QMP screendump) and return its path."""
    from tapvirt.domains import live

    dd, _ = live.supervised(name)
    dom = live.live_domain(dd)
    if not dom.devices.videos or dom.devices.videos[0].model.value == "none":
        raise TapvirtError(SCREENSHOT_FAILED, f"domain {name}", "it has no video card",
                           "add <video><model type='vga'/></video>, then restart it")
    path = Path(file) if file else Path(f"{name}-{time.strftime('%Y%m%d%H%M%S')}.png")
    path = path.absolute()
    if path.is_dir():
        raise TapvirtError(SCREENSHOT_FAILED, str(path), "it is a directory",
                           "give a file name such as shot.png")
    args: dict[str, Any] = {"filename": str(path), "format": "png"}
    if screen:
        args["head"] = screen
    try:
        live.qmp_read(name, "screendump", args)
    except TapvirtError as err:
        if err.code.code != "qmp-command-failed":
            raise
        raise TapvirtError(SCREENSHOT_FAILED, str(path), err.cause,
                           "check that the directory exists and is writable, and that "
                           f"screen {screen} exists") from None
    return path


def with_runtime_listens(dom: Domain, runtime_dir: str) -> Domain:
    """The domain with each display's real listen (a default UNIX socket's path), so the
    live XML says where QEMU listens, as libvirt's does."""
    if not dom.devices.graphics:
        return dom
    from dataclasses import replace

    from tapvirt.qemu.argv.graphics import runtime_listen

    graphics = tuple(replace(g, listen=runtime_listen(g, runtime_dir))
                     for g in dom.devices.graphics)
    return replace(dom, devices=replace(dom.devices, graphics=graphics))
