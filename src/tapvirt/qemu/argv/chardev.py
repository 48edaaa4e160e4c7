"""Character devices: serial ports (and the console, which is serial port 0 on x86)."""

from __future__ import annotations

from tapvirt.conf.model import Chardev, ChardevType, Domain
from tapvirt.qemu.argv.encode import jsonarg, opt


def chardev_args(dom: Domain) -> list[str]:
    # On x86 a <console> of a domain that has a <serial> is that serial port, not a second
    # device (libvirt formats it as an alias of serial0); without serials it becomes one.
    chars: list[Chardev] = list(dom.devices.serials) or list(dom.devices.consoles)
    argv: list[str] = []
    for n, ch in enumerate(chars):
        port = ch.port if dom.devices.serials else n
        cid = f"charserial{port}"
        log = (f",logfile={opt(ch.log_file)},logappend={'on' if ch.log_append else 'off'}"
               if ch.log_file else "")
        argv += ["-chardev", _chardev_backend(ch, cid) + log]
        argv += ["-device", jsonarg({"driver": "isa-serial", "chardev": cid,
                                   "id": f"serial{port}", "index": port})]
    return argv


def _chardev_backend(ch: Chardev, cid: str) -> str:
    if ch.type is ChardevType.PTY:
        return f"pty,id={cid}"
    if ch.type is ChardevType.NULL:
        return f"null,id={cid}"
    if ch.type is ChardevType.FILE:
        return f"file,id={cid},path={opt(ch.path or '')}"
    listen = ",server=on,wait=off" if ch.unix_listen else ""
    return f"socket,id={cid},path={opt(ch.path or '')}{listen}"
