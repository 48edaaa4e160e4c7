"""Character devices: serial ports (and the console, which is serial port 0 on x86)."""

from __future__ import annotations

from tapvirt.conf.devices.chardev import TcpProtocol
from tapvirt.conf.model import Chardev, ChardevType, Domain
from tapvirt.qemu.argv.encode import jsonarg, opt


def chardev_args(dom: Domain) -> list[str]:
    # On x86 a <console> of a domain that has a <serial> is that serial port, not a second
    # device (libvirt formats it as an alias of serial0); without serials it becomes one.
    chars: list[Chardev] = list(dom.devices.serials) or [
        c for c in dom.devices.consoles if not c.virtio]
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
    """libvirt 9.0's qemuBuildChardevStr for the source types tapvirt runs."""
    t = ch.type
    if t in (ChardevType.PTY, ChardevType.NULL, ChardevType.VC):
        return f"{t},id={cid}"
    if t is ChardevType.FILE:
        append = "" if ch.append is None else f",append={'on' if ch.append else 'off'}"
        return f"file,id={cid},path={opt(ch.path or '')}{append}"
    if t is ChardevType.DEV:  # libvirt: 'parallel' for parallel ports
        return f"serial,id={cid},path={opt(ch.path or '')}"
    if t is ChardevType.PIPE:
        return f"pipe,id={cid},path={opt(ch.path or '')}"
    if t is ChardevType.UDP:  # libvirt writes every key, empty when not given
        return (f"udp,id={cid},host={ch.host or ''},port={ch.service},"
                f"localaddr={ch.bind_host or ''},localport={ch.bind_service or '0'}")
    listen = ",server=on,wait=off" if ch.listen else ""
    if t is ChardevType.TCP:
        telnet = ",telnet=on" if ch.protocol is TcpProtocol.TELNET else ""
        return f"socket,id={cid},host={ch.host},port={ch.service}{telnet}{listen}"
    return f"socket,id={cid},path={opt(ch.path or '')}{listen}"


def virtio_console_args(dom: Domain) -> list[str]:
    """Consoles with <target type='virtio'/>: virtconsole ports (after the channels, as in
    libvirt's command line)."""
    argv: list[str] = []
    for c in dom.devices.consoles:
        if c.virtio:
            cid = f"charconsole{c.port}"
            argv += ["-chardev", _chardev_backend(c, cid)]
            argv += ["-device", jsonarg({"driver": "virtconsole", "chardev": cid,
                                         "id": f"console{c.port}"})]
    return argv
