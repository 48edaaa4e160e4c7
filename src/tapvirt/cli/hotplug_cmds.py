"""Hotplug verbs with virsh's names, flags and messages: attach-device, detach-device,
update-device, attach-interface, detach-interface. Thin: the logic is in
`tapvirt.domains.hotplug`.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any


def _scope_flags(p: argparse.ArgumentParser, *, persistent: bool = True) -> None:
    p.add_argument("--live", action="store_true", help="affect the running guest")
    p.add_argument("--config", action="store_true", help="affect the stored definition")
    if persistent:
        p.add_argument("--persistent", action="store_true", help="both --live and --config")
    p.add_argument("--current", action="store_true",
                   help="the running guest if it runs, else the definition (default)")
    p.add_argument("--json", action="store_true", help="print the result as JSON")


def _timeout(p: argparse.ArgumentParser) -> None:
    p.add_argument("--timeout", type=float, default=10.0, metavar="S",
                   help="seconds to wait for the guest to release the device (default 10)")


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    for verb, helptext in (("attach-device", "attach a device from an XML file"),
                           ("detach-device", "detach the device an XML file describes"),
                           ("update-device", "change a device in place (link state, cdrom)")):
        p = sub.add_parser(verb, help=helptext)
        p.add_argument("name", metavar="NAME")
        p.add_argument("file", metavar="FILE",
                       help="<interface>, <disk> or (attach-device) <memory> XML")
        _scope_flags(p)
        if verb == "attach-device":
            p.add_argument("--tun-node", metavar="PATH",
                           help="tun clone device to open taps with (env TAPVIRT_TUN_NODE)")
        if verb == "detach-device":
            _timeout(p)
        p.set_defaults(func=cmd_device, verb_kind=verb)

    p = sub.add_parser("attach-interface", help="attach a network interface (virsh's form)")
    p.add_argument("name", metavar="NAME")
    p.add_argument("type", metavar="TYPE", help="ethernet (a precreated device), bridge, "
                                                "direct, user")
    p.add_argument("source", metavar="SOURCE", nargs="?",
                   help="ethernet: the precreated tap/macvtap; bridge: the bridge; direct: "
                        "the lower device")
    p.add_argument("--target", metavar="DEV", help="the host device name (bridge, direct)")
    p.add_argument("--mac", metavar="MAC")
    p.add_argument("--model", metavar="MODEL", help="virtio, e1000, e1000e, rtl8139")
    p.add_argument("--tun-node", metavar="PATH", help="tun clone device to open taps with")
    _scope_flags(p)
    p.set_defaults(func=cmd_attach_interface)

    p = sub.add_parser("detach-interface", help="detach a network interface (virsh's form)")
    p.add_argument("name", metavar="NAME")
    p.add_argument("type", metavar="TYPE")
    p.add_argument("--mac", metavar="MAC", help="which one, when there are several")
    _scope_flags(p)
    _timeout(p)
    p.set_defaults(func=cmd_detach_interface)


def _how(args: argparse.Namespace) -> Any:
    from tapvirt.domains import hotplug

    return hotplug.affect(args.name, live_=args.live, config=args.config,
                          persistent=getattr(args, "persistent", False), current=args.current)


def _report(args: argparse.Namespace, outcomes: list[Any], text: str) -> int:
    if not args.json:
        for o in outcomes:
            for w in o.warnings:
                print(f"warning[{w['code']}]: {w['message']}" + (
                    f"\n  fix: {w['fix']}" if w.get("fix") else ""), file=sys.stderr)
        print(text)
        return 0
    from tapvirt.cli.common import print_json

    print_json({"ok": True, "name": args.name, "changes": [o.to_json() for o in outcomes]})
    return 0


def cmd_device(args: argparse.Namespace) -> int:
    from tapvirt.domains import hotplug

    dev = hotplug.read_device_file(args.file)
    how = _how(args)
    if args.verb_kind == "attach-device":
        outcomes = hotplug.attach_device(args.name, dev, how=how, tun_node=args.tun_node)
        return _report(args, outcomes, "Device attached successfully")
    if args.verb_kind == "detach-device":
        outcomes = hotplug.detach_device(args.name, dev, how=how, timeout=args.timeout)
        return _report(args, outcomes, "Device detached successfully")
    outcomes = hotplug.update_device(args.name, dev, how=how)
    return _report(args, outcomes, "Device updated successfully")


def cmd_attach_interface(args: argparse.Namespace) -> int:
    from tapvirt.domains import hotplug

    text = hotplug.interface_xml(args.type, args.source, target=args.target, mac=args.mac,
                                 model=args.model)
    dev = hotplug.device_xml(text, "attach-interface")
    outcomes = hotplug.attach_device(args.name, dev, how=_how(args), tun_node=args.tun_node)
    return _report(args, outcomes, "Interface attached successfully")


def cmd_detach_interface(args: argparse.Namespace) -> int:
    from tapvirt.domains import hotplug

    outcomes = hotplug.detach_interface(args.name, args.type, mac=args.mac, how=_how(args),
                                        timeout=args.timeout)
    return _report(args, outcomes, "Interface detached successfully")
