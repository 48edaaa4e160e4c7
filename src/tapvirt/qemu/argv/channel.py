"""QEMU arguments of `<channel>`, `<redirdev>` and `<tpm>`. PURE.

libvirt 9.0 for QEMU 7.2 writes `-chardev` as an option string and the devices as JSON.
Differences on purpose (docs/argv.md): libvirt creates listening UNIX sockets itself and
passes QEMU the fd (`fd=N`); tapvirt lets QEMU create them (`path=...,server=on,wait=off`),
as it does for serial ports and the monitor.
"""

from __future__ import annotations

from typing import Any

from tapvirt.conf.devices.channel import Channel, ChannelType, channel_socket
from tapvirt.conf.devices.tpm import Tpm, TpmBackend


def _opt(value: str) -> str:
    return value.replace(",", ",,")


def channel_chardev(c: Channel, alias: str, runtime_dir: str) -> str:
    cid = f"char{alias}"
    if c.type is ChannelType.PTY:
        return f"pty,id={cid}"
    if c.type is ChannelType.SPICEVMC:
        return f"spicevmc,id={cid},name=vdagent"
    path = channel_socket(c, runtime_dir) or ""
    listen = ",server=on,wait=off" if c.listen else ""
    return f"socket,id={cid},path={_opt(path)}{listen}"


def channel_device(c: Channel, alias: str,
                   port: tuple[int, int, int] | None = None) -> dict[str, Any]:
    """virtserialport; `port` is the virtio-serial address (controller, bus, port)."""
    out: dict[str, Any] = {"driver": "virtserialport"}
    if port is not None:
        controller, bus, nr = port
        out["bus"] = f"virtio-serial{controller}.{bus}"
        if nr:
            out["nr"] = nr
    out["chardev"] = f"char{alias}"
    out["id"] = alias
    if c.name is not None:
        out["name"] = c.name
    return out


def redirdev_argv(alias: str) -> tuple[str, dict[str, Any]]:
    """(-chardev option, usb-redir -device object without its USB address)."""
    return (f"spicevmc,id=char{alias},name=usbredir",
            {"driver": "usb-redir", "chardev": f"char{alias}", "id": alias})


def tpm_socket(t: Tpm, runtime_dir: str) -> str:
    """Where QEMU finds swtpm: the external socket, or the one the launcher's swtpm makes."""
    if t.backend is TpmBackend.EXTERNAL and t.socket is not None:
        return t.socket
    return f"{runtime_dir}/swtpm.sock"


def tpm_argv(t: Tpm, runtime_dir: str) -> list[str]:
    alias = t.alias or "tpm0"
    return [
        "-chardev", f"socket,id=chrtpm,path={_opt(tpm_socket(t, runtime_dir))}",
        "-tpmdev", f"emulator,id=tpm-{alias},chardev=chrtpm",
    ]


def tpm_device(t: Tpm) -> dict[str, Any]:
    alias = t.alias or "tpm0"
    return {"driver": t.model.value, "tpmdev": f"tpm-{alias}", "id": alias}
