"""QEMU arguments of `<graphics>`, `<video>` and `<input>`. PURE.

libvirt 9.0's forms for QEMU 7.2: `-vnc` and `-spice` as option strings (not JSON), video
cards and USB/virtio input devices as JSON `-device`. Where tapvirt differs on purpose
(docs/argv.md):
* a display with autoport whose `<listen type='address'>` names no address gets a UNIX
  socket in the runtime directory (`vnc.sock`, `spice.sock`; 0600), as libvirt does
  with qemu.conf's `vnc_auto_unix_socket`/`spice_auto_unix_socket`: no TCP port that
  other local users could reach. An explicit address (`listen='127.0.0.1'`) or a fixed
  port listens on TCP;
* VNC and SPICE with autoport on an address: the launcher picks a free port, as libvirt
  does, under a lock shared by the user's launchers (tapvirt.domains.display), and
  passes it here; a dry run shows 5900;
* SPICE without a password: `disable-ticketing=on`, as libvirt does with the default
  qemu.conf (libvirt's test suite sets spice_password, so its `.args` lack it);
* the password itself is never on the command line: `password=on` (VNC) or nothing
  (SPICE) on the argv, then QMP `set_password` (see `graphics_qmp`).
"""

from __future__ import annotations

from typing import Any

from tapvirt.conf.devices.graphics import (
    DEFAULT_LISTEN_ADDRESS,
    SPICE_OPTIONS,
    VNC_PORT_MIN,
    Graphics,
    GraphicsType,
    Listen,
    ListenType,
    Video,
    VideoModel,
)
from tapvirt.conf.devices.input import Input, InputBus, InputType
from tapvirt.qemu.argv.virtio import virtio_device

_PRIMARY_DRIVER = {
    VideoModel.VGA: "VGA", VideoModel.CIRRUS: "cirrus-vga", VideoModel.VMVGA: "vmware-svga",
    VideoModel.QXL: "qxl-vga", VideoModel.VIRTIO: "virtio-vga",
    VideoModel.BOCHS: "bochs-display", VideoModel.RAMFB: "ramfb",
}
_SECONDARY_DRIVER = {VideoModel.QXL: "qxl", VideoModel.VIRTIO: "virtio-gpu-pci"}


def runtime_listen(g: Graphics, runtime_dir: str) -> Listen:
    """Where QEMU really listens: a listen of type address without an address and with
    autoport is a UNIX socket in the runtime directory (a fixed port means TCP on
    127.0.0.1); a socket without a path gets that path too."""
    ln = g.listen
    if ln.type is ListenType.SOCKET and ln.socket:
        return ln
    if ln.type is ListenType.NONE or (ln.type is ListenType.ADDRESS and (
            ln.address or not g.autoport)):
        return ln
    return Listen(ListenType.SOCKET, socket=f"{runtime_dir}/{g.type.value}.sock")


def _opt(value: str) -> str:
    """QEMU's option syntax: a comma inside a value is written twice."""
    return value.replace(",", ",,")


def graphics_argv(
    g: Graphics, *, runtime_dir: str, audio_id: int | None, port: int | None = None
) -> list[str]:
    """`-vnc ...` or `-spice ...` (and `-k keymap`).

    runtime_dir: where a `<listen type='socket'/>` without a path gets its socket.
    port: the TCP port the launcher chose for an autoport display on an address;
        defaults to 5900 for a dry run.
    """
    argv = (_vnc(g, runtime_dir, audio_id, port) if g.type is GraphicsType.VNC
            else _spice(g, runtime_dir, port))
    if g.keymap is not None:
        argv += ["-k", g.keymap]
    return argv


def _host(address: str | None) -> str:
    addr = address or DEFAULT_LISTEN_ADDRESS
    return f"[{addr}]" if ":" in addr else addr


def _tcp_port(g: Graphics, chosen: int | None) -> int:
    """The TCP port a display listens on: the launcher's choice with autoport, else the
    fixed port; 5900 in a dry run."""
    return (chosen if g.autoport else g.port) or VNC_PORT_MIN


def _vnc(g: Graphics, runtime_dir: str, audio_id: int | None, port: int | None) -> list[str]:
    ln = runtime_listen(g, runtime_dir)
    if ln.type is ListenType.SOCKET:
        opt = "vnc=unix:" + _opt(graphics_socket(g, runtime_dir) or "")
    elif ln.type is ListenType.NONE:
        opt = "none"
    else:
        opt = f"{_host(ln.address)}:{_tcp_port(g, port) - VNC_PORT_MIN}"
    if g.share_policy is not None:
        opt += f",share={g.share_policy}"
    if g.passwd is not None:
        opt += ",password=on"  # the password follows by QMP, never on the argv
    if audio_id is not None:
        opt += f",audiodev=audio{audio_id}"
    return ["-vnc", opt]


def _spice(g: Graphics, runtime_dir: str, port: int | None) -> list[str]:
    ln = runtime_listen(g, runtime_dir)
    parts: list[str] = []
    if ln.type is ListenType.SOCKET:
        parts.append("unix,addr=" + _opt(graphics_socket(g, runtime_dir) or ""))
    elif ln.type is ListenType.NONE:
        parts.append("port=0")
    else:
        parts += [f"port={_tcp_port(g, port)}", f"addr={ln.address or DEFAULT_LISTEN_ADDRESS}"]
    options = dict(g.spice_options)
    if "mouse" in options:
        parts.append("agent-mouse=" + ("on" if options["mouse"] == "client" else "off"))
    if g.passwd is None:
        parts.append("disable-ticketing=on")
    if g.spice_default_insecure:
        parts.append("plaintext-channel=default")
    parts += [f"plaintext-channel={name}" for name in g.spice_insecure_channels]
    for tag, _attr, _values, qemu_opt in SPICE_OPTIONS:
        value = options.get(tag)
        if value is None or tag == "mouse":
            continue
        if tag in ("clipboard", "filetransfer"):
            if value == "no":
                parts.append(f"{qemu_opt}=on")
        else:
            parts.append(f"{qemu_opt}={value}")
    parts.append("seamless-migration=on")
    return ["-spice", ",".join(parts)]


def graphics_socket(g: Graphics, runtime_dir: str) -> str | None:
    """The UNIX socket QEMU listens on for this display (None: TCP or nowhere)."""
    ln = runtime_listen(g, runtime_dir)
    return ln.socket if ln.type is ListenType.SOCKET else None


def is_tcp(g: Graphics, runtime_dir: str = ".") -> bool:
    return runtime_listen(g, runtime_dir).type is ListenType.ADDRESS


def graphics_qmp(g: Graphics) -> list[dict[str, Any]]:
    """QMP commands before `cont`: the password, as libvirt sets it after QEMU started."""
    if g.passwd is None:
        return []
    protocol = g.type.value
    return [
        {"execute": "set_password", "arguments": {"protocol": protocol, "password": g.passwd}},
        {"execute": "expire_password", "arguments": {"protocol": protocol, "time": "never"}},
    ]


def video_device(v: Video) -> dict[str, Any] | None:
    """The -device object of a video card (None for model 'none')."""
    if v.model is VideoModel.NONE:
        return None
    driver = _PRIMARY_DRIVER[v.model] if v.primary else _SECONDARY_DRIVER[v.model]
    out: dict[str, Any] = {"driver": driver, "id": v.alias or "video0"}
    if v.model in (VideoModel.QXL, VideoModel.VIRTIO) and v.heads:
        out["max_outputs"] = v.heads
    if v.model is VideoModel.QXL:
        if v.ram:
            out["ram_size"] = v.ram * 1024
        if v.vram:
            out["vram_size"] = v.vram * 1024
        out["vram64_size_mb"] = v.vram64 // 1024
        out["vgamem_mb"] = v.vgamem // 1024
    elif v.model in (VideoModel.VGA, VideoModel.VMVGA) and v.vram // 1024:
        out["vgamem_mb"] = v.vram // 1024
    elif v.model is VideoModel.BOCHS and v.vram:
        out["vgamem"] = v.vram * 1024
    if v.resolution is not None:
        out["xres"], out["yres"] = v.resolution
    return out


def video_is_pci(v: Video) -> bool:
    return v.model not in (VideoModel.NONE, VideoModel.RAMFB)


_USB_INPUT = {InputType.MOUSE: "usb-mouse", InputType.TABLET: "usb-tablet",
              InputType.KEYBOARD: "usb-kbd"}
_VIRTIO_INPUT = {InputType.MOUSE: "virtio-mouse-pci", InputType.TABLET: "virtio-tablet-pci",
                 InputType.KEYBOARD: "virtio-keyboard-pci"}


def input_device(i: Input, alias: str) -> dict[str, Any] | None:
    """The -device object (None for PS/2: the i8042 controller is part of the machine)."""
    if i.bus is InputBus.PS2:
        return None
    table = _USB_INPUT if i.bus is InputBus.USB else _VIRTIO_INPUT
    out = virtio_device(table[i.type], i.virtio)
    out["id"] = alias
    return out
