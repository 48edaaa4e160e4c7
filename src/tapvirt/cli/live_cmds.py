"""Verbs on running guests, virsh's names and output: suspend, reset, reboot,
domif-setlink, domif-getlink, domifstat, domifaddr, dommemstat, qemu-monitor-command
(and the hotplug verbs in `tapvirt.cli.hotplug_cmds`). Thin: the logic is in
`tapvirt.domains.live`.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any


def _json_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print the result as JSON")


def _out(args: argparse.Namespace, obj: dict[str, Any], text: str) -> None:
    if getattr(args, "json", False):
        from tapvirt.cli.common import print_json

        print_json({"ok": True, **obj})
    elif text:
        print(text)


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("suspend", help="pause a running guest (state paused, reason user)")
    p.add_argument("name", metavar="NAME")
    _json_flag(p)
    p.set_defaults(func=cmd_suspend)

    p = sub.add_parser("reset", help="reset the guest at once (no guest OS shutdown)")
    p.add_argument("name", metavar="NAME")
    _json_flag(p)
    p.set_defaults(func=cmd_reset)

    p = sub.add_parser("reboot", help="reboot the guest (ACPI power-off + fresh start, "
                                      "or reset)")
    p.add_argument("name", metavar="NAME")
    p.add_argument("--mode", choices=("acpi", "reset", "agent"),
                   help="acpi (default with <acpi/>): ask the guest; reset: system_reset; "
                        "agent: the guest agent's guest-shutdown (reboot)")
    _json_flag(p)
    p.set_defaults(func=cmd_reboot)

    p = sub.add_parser("domif-setlink", help="set an interface's link state up or down")
    p.add_argument("name", metavar="NAME")
    p.add_argument("interface", metavar="IFACE", help="host device name or MAC")
    p.add_argument("state", choices=("up", "down"))
    p.add_argument("--config", action="store_true", help="change the stored definition")
    _json_flag(p)
    p.set_defaults(func=cmd_setlink)

    p = sub.add_parser("domif-getlink", help="an interface's link state")
    p.add_argument("name", metavar="NAME")
    p.add_argument("interface", metavar="IFACE", help="host device name or MAC")
    p.add_argument("--config", action="store_true", help="as in the stored definition")
    _json_flag(p)
    p.set_defaults(func=cmd_getlink)

    p = sub.add_parser("domifstat", help="an interface's traffic counters (host side)")
    p.add_argument("name", metavar="NAME")
    p.add_argument("interface", metavar="IFACE", help="host device name or MAC")
    _json_flag(p)
    p.set_defaults(func=cmd_domifstat)

    p = sub.add_parser("domifaddr", help="the guest's IP addresses")
    p.add_argument("name", metavar="NAME")
    p.add_argument("interface", metavar="IFACE", nargs="?", help="only this interface")
    p.add_argument("--source", choices=("lease", "arp", "agent"), default="lease",
                   help="lease (none: tapvirt runs no DHCP), arp (the host's neighbour "
                        "table), agent (guest agent)")
    _json_flag(p)
    p.set_defaults(func=cmd_domifaddr)

    p = sub.add_parser("domhostname", help="the guest's host name (from the guest agent)")
    p.add_argument("name", metavar="NAME")
    p.add_argument("--source", choices=("agent",), default="agent",
                   help="agent (the only source: no DHCP leases)")
    _json_flag(p)
    p.set_defaults(func=cmd_domhostname)

    p = sub.add_parser("guestinfo", help="what the guest agent reports: users, OS, "
                                         "timezone, host name, file systems")
    p.add_argument("name", metavar="NAME")
    _json_flag(p)
    p.set_defaults(func=cmd_guestinfo)

    p = sub.add_parser("dommemstat", help="memory statistics (balloon, QEMU's rss)")
    p.add_argument("name", metavar="NAME")
    _json_flag(p)
    p.set_defaults(func=cmd_dommemstat)

    p = sub.add_parser("domblklist", help="the guest's disks")
    p.add_argument("name", metavar="NAME")
    p.add_argument("--details", action="store_true", help="also type and device")
    _json_flag(p)
    p.set_defaults(func=cmd_domblklist)

    for verb, helptext in (("domblkstat", "a disk's I/O counters (QMP query-blockstats)"),
                           ("domblkinfo", "a disk's capacity, allocation and physical size")):
        p = sub.add_parser(verb, help=helptext)
        p.add_argument("name", metavar="NAME")
        p.add_argument("disk", metavar="DEV", help="target (vda) or source path")
        _json_flag(p)
        p.set_defaults(func=cmd_domblk, verb_kind=verb)

    p = sub.add_parser("edit", help="edit the stored definition in $VISUAL/$EDITOR")
    p.add_argument("name", metavar="NAME")
    p.set_defaults(func=cmd_edit)

    p = sub.add_parser("qemu-monitor-command",
                       help="UNSUPPORTED: send a raw QMP command (marks the guest)")
    p.add_argument("name", metavar="NAME")
    p.add_argument("command", metavar="JSON", help='e.g. \'{"execute":"query-status"}\'')
    p.add_argument("--pretty", action="store_true", help="indent the reply")
    p.set_defaults(func=cmd_monitor)


def cmd_suspend(args: argparse.Namespace) -> int:
    from tapvirt.domains import live

    st = live.suspend(args.name)
    _out(args, {"name": args.name, "state": st.state, "reason": st.reason},
         f"Domain '{args.name}' suspended")
    return 0


def cmd_reset(args: argparse.Namespace) -> int:
    from tapvirt.domains import live

    live.reset(args.name)
    _out(args, {"name": args.name}, f"Domain '{args.name}' was reset")
    return 0


def cmd_reboot(args: argparse.Namespace) -> int:
    from tapvirt.domains import live

    live.reboot(args.name, mode=args.mode)
    _out(args, {"name": args.name}, f"Domain '{args.name}' is being rebooted")
    return 0


def cmd_setlink(args: argparse.Namespace) -> int:
    from tapvirt.domains import live

    row = live.domif_setlink(args.name, args.interface, args.state, config=args.config)
    _out(args, {"name": args.name, "interface": row.alias, "mac": row.mac,
                "device": row.device, "state": row.link}, "Device updated successfully")
    return 0


def cmd_getlink(args: argparse.Namespace) -> int:
    from tapvirt.domains import live

    row, state = live.domif_getlink(args.name, args.interface, config=args.config)
    _out(args, {"name": args.name, "interface": row.alias, "mac": row.mac,
                "device": row.device, "state": state}, f"{args.interface} {state}")
    return 0


def cmd_domifstat(args: argparse.Namespace) -> int:
    from tapvirt.domains import live

    row, stats = live.domifstat(args.name, args.interface)
    text = "\n".join(f"{args.interface} {k} {stats[k]}" for k in live.STAT_FIELDS)
    _out(args, {"name": args.name, "interface": row.alias, "device": row.device,
                "mac": row.mac, "stats": stats}, text)
    return 0


def cmd_domifaddr(args: argparse.Namespace) -> int:
    from tapvirt.domains import live

    rows = live.domifaddr(args.name, source=args.source, iface=args.interface)
    if args.json:
        _out(args, {"name": args.name, "addresses": [r.to_json() for r in rows]}, "")
        return 0
    print(f" {'Name':<10} {'MAC address':<20} {'Protocol':<12} Address")
    print("-" * 79)
    for r in rows:
        print(f" {r.name:<10} {r.mac:<20} {r.protocol:<12} {r.address}")
    print()
    return 0


def cmd_domhostname(args: argparse.Namespace) -> int:
    from tapvirt.domains import agent

    host = agent.hostname(args.name)
    _out(args, {"name": args.name, "hostname": host}, host)
    return 0


def cmd_guestinfo(args: argparse.Namespace) -> int:
    from tapvirt.domains import agent

    info = agent.guestinfo(args.name)
    _out(args, {"name": args.name, "info": info},
         "\n".join(f"{k:<20}: {v}" for k, v in info.items()))
    return 0


def cmd_dommemstat(args: argparse.Namespace) -> int:
    from tapvirt.domains import live

    stats, warnings = live.dommemstat(args.name)
    if args.json:
        _out(args, {"name": args.name, "stats": stats,
                    "warnings": [w.to_json() for w in warnings]}, "")
        return 0
    for w in warnings:
        print(f"warning[{w.code}]: {w.message}\n  fix: {w.fix}", file=sys.stderr)
    for k, v in stats.items():
        print(f"{k} {v}")
    return 0


def cmd_domblklist(args: argparse.Namespace) -> int:
    from tapvirt.domains import live

    rows = live.domblklist(args.name)
    if args.json:
        _out(args, {"name": args.name, "disks": [r.to_json() for r in rows]}, "")
        return 0
    if args.details:
        print(f" {'Type':<6} {'Device':<8} {'Target':<8} Source")
        print("-" * 48)
        for r in rows:
            print(f" {r.type:<6} {r.device:<8} {r.target:<8} {r.source}")
    else:
        print(f" {'Target':<8} Source")
        print("-" * 48)
        for r in rows:
            print(f" {r.target:<8} {r.source}")
    return 0


def cmd_domblk(args: argparse.Namespace) -> int:
    from tapvirt.domains import live

    if args.verb_kind == "domblkstat":
        target, stats = live.domblkstat(args.name, args.disk)
        _out(args, {"name": args.name, "disk": target, "stats": stats},
             "\n".join(f"{target} {k} {v}" for k, v in stats.items()))
        return 0
    target, info = live.domblkinfo(args.name, args.disk)
    _out(args, {"name": args.name, "disk": target, **info},
         "\n".join(f"{k.capitalize() + ':':<16}{v}" for k, v in info.items()))
    return 0


def cmd_edit(args: argparse.Namespace) -> int:
    from tapvirt.domains import edit

    result = edit.edit(args.name)
    if result.changed:
        print(f"Domain '{args.name}' XML configuration edited.")
    else:
        print(f"Domain '{args.name}' XML configuration not changed.")
    return 0


def cmd_monitor(args: argparse.Namespace) -> int:
    import json

    from tapvirt.domains import live

    print("warning: qemu-monitor-command is unsupported territory: tapvirt does not track "
          "what the command changes", file=sys.stderr)
    result = live.monitor_command(args.name, args.command)
    reply = {"return": {} if result is None else result}
    print(json.dumps(reply, indent=2 if args.pretty else None))
    return 0
