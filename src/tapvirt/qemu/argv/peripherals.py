"""The arguments of the devices around disks and NICs, in libvirt 9.0's command-line order
(qemuBuildCommandLine: channels, TPM, input, audio, graphics, video, sound, watchdog,
redirdev, memballoon, rng, panic), and the QMP commands they need after QEMU started.
PURE; each family's objects come from its own module."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from tapvirt.conf.model import Domain, LifecycleAction
from tapvirt.qemu.argv import channel as ch
from tapvirt.qemu.argv import graphics as gr
from tapvirt.qemu.argv import misc
from tapvirt.qemu.argv import sound as snd
from tapvirt.qemu.argv.chardev import virtio_console_args
from tapvirt.qemu.argv.controller import address_props
from tapvirt.qemu.argv.encode import jsonarg
from tapvirt.qemu.argv.machine import machine_of


def runtime_dir_of(qmp_socket: str) -> str:
    """The guest's runtime directory: where its QMP socket is, and its other sockets go."""
    return os.path.dirname(qmp_socket) or "."


def implicit_controllers(dom: Domain) -> list[str]:
    """The buses these devices need when the definition has no controller for them:
    virtio-serial for channels and virtio consoles, USB for USB input, sound and
    redirection (libvirt adds the controllers in its post-parse step; until the
    controller family's own step writes them into the definition, the command line
    adds them here, with libvirt's ids, so that QEMU finds the buses)."""
    d = dom.devices
    controllers = getattr(d, "controllers", ())
    kinds = {str(getattr(c, "type", "")) for c in controllers}
    argv: list[str] = []
    if (d.channels or any(c.virtio for c in d.consoles)) and "virtio-serial" not in kinds:
        argv += ["-device", jsonarg({"driver": "virtio-serial-pci", "id": "virtio-serial0"})]
    usb = (any(i.bus.value == "usb" for i in d.inputs) or d.redirdevs or d.hubs
           or any(s.model.value == "usb" for s in d.sounds))
    if usb and "usb" not in kinds:
        q35 = "q35" in machine_of(dom)
        argv += ["-device", jsonarg({"driver": "qemu-xhci" if q35 else "piix3-usb-uhci",
                                     "id": "usb"})]
    return argv


def peripheral_args(
    dom: Domain, runtime_dir: str, display_ports: Sequence[int] = ()
) -> list[str]:
    d = dom.devices
    argv: list[str] = []

    def device(obj: dict[str, Any] | None, address: object = None) -> None:
        """One -device; the address properties last, as libvirt writes them."""
        if obj is not None:
            obj.update(address_props(dom, address))
            argv.extend(["-device", jsonarg(obj)])

    argv += implicit_controllers(dom)
    for c in d.channels:
        alias = c.alias or "channel"
        argv += ["-chardev", ch.channel_chardev(c, alias, runtime_dir)]
        sa = c.address
        device(ch.channel_device(c, alias, None if sa is None else
                                 (sa.controller, sa.bus, sa.port)))
    argv += virtio_console_args(dom)
    if d.tpm is not None:
        argv += ch.tpm_argv(d.tpm, runtime_dir)
        device(ch.tpm_device(d.tpm))
    for n, i in enumerate(d.inputs):
        device(gr.input_device(i, i.alias or f"input{n}"), i.address)
    for a in d.audios:
        argv += ["-audiodev", jsonarg(snd.audiodev(a))]
    first_audio = d.audios[0].id if d.audios else None
    chosen = iter(display_ports)
    for g in d.graphics:
        port = next(chosen, None) if g.autoport and gr.is_tcp(g) else None
        argv += gr.graphics_argv(g, runtime_dir=runtime_dir, audio_id=first_audio, port=port)
    for v in d.videos:
        device(gr.video_device(v), v.address)
    for n, s in enumerate(d.sounds):
        objs = snd.sound_devices(s, s.alias or f"sound{n}", snd.resolve_audio_id(s, d.audios))
        for k, obj in enumerate(objs):
            device(obj, s.address if k == 0 else None)
    if d.watchdog is not None:
        device(misc.watchdog_device(d.watchdog), d.watchdog.address)
        argv += misc.watchdog_action(d.watchdog)
    for n, x in enumerate(d.redirdevs):
        chardev, obj = ch.redirdev_argv(x.alias or f"redir{n}")
        argv += ["-chardev", chardev]
        device(obj, x.address)
    if d.memballoon is not None:
        device(misc.memballoon_device(d.memballoon), d.memballoon.address)
    for n, r in enumerate(d.rngs):
        alias = r.alias or f"rng{n}"
        argv += ["-object", jsonarg(misc.rng_object(r, alias))]
        device(misc.rng_device(r, alias), r.address)
    for p in d.panics:
        device(misc.panic_device(p))
    if d.panics:
        argv += misc.panic_action(dom.on_crash in (LifecycleAction.PRESERVE,
                                                   LifecycleAction.RENAME_RESTART))
    return argv


def peripheral_qmp(dom: Domain) -> list[dict[str, Any]]:
    """QMP commands before `cont`: graphics passwords, the balloon's statistics period."""
    d = dom.devices
    cmds: list[dict[str, Any]] = []
    for g in d.graphics:
        cmds += gr.graphics_qmp(g)
    if d.memballoon is not None:
        cmds += misc.memballoon_qmp(d.memballoon)
    return cmds


def startup_commands(dom: Domain) -> list[dict[str, Any]]:
    """Every QMP command the launcher sends before `cont`: link states, then these."""
    from tapvirt.qemu.argv.interface import link_state_commands

    return [*link_state_commands(dom), *peripheral_qmp(dom)]
