"""Verbs that run guests: start, create, shutdown, destroy, list, dominfo, dumpxml,
domiflist, console, domstate. Thin: the logic is in `tapvirt.domains.api`.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the hot verbs run without argparse (cli/fast.py)
    import argparse


def _json_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print the result as JSON")


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    for verb, helptext in (("start", "start a defined domain (returns when it runs)"),
                           ("create", "start a transient domain from an XML file")):
        p = sub.add_parser(verb, help=helptext)
        p.add_argument("target", metavar="NAME" if verb == "start" else "FILE")
        p.add_argument("--tun-node", metavar="PATH",
                       help="tun clone device to open taps with (default /dev/net/tun; "
                            "env TAPVIRT_TUN_NODE)")
        p.add_argument("--timeout", type=float, default=30.0, metavar="S",
                       help="seconds to wait for QEMU to answer (default 30)")
        p.add_argument("--paused", action="store_true",
                       help="leave the guest paused before its first instruction")
        _json_flag(p)
        p.set_defaults(func=cmd_start, verb_kind=verb)

    p = sub.add_parser("shutdown", help="ask the guest to power off (ACPI); destroy on timeout")
    p.add_argument("name", metavar="NAME")
    p.add_argument("--timeout", type=float, default=60.0, metavar="S",
                   help="seconds to wait for the power-off before destroying (default 60)")
    p.add_argument("--mode", choices=("acpi", "agent"), default="acpi",
                   help="acpi (default): the power button; agent: the guest agent's "
                        "guest-shutdown")
    _json_flag(p)
    p.set_defaults(func=cmd_shutdown)

    p = sub.add_parser("resume", help="let a guest started with --paused run")
    p.add_argument("name", metavar="NAME")
    _json_flag(p)
    p.set_defaults(func=cmd_resume)

    p = sub.add_parser("destroy", help="stop the guest now (like pulling the plug)")
    p.add_argument("name", metavar="NAME")
    _json_flag(p)
    p.set_defaults(func=cmd_destroy)

    p = sub.add_parser("list", help="list domains (running ones; --all: also shut off ones)")
    p.add_argument("--all", action="store_true", help="also list shut off domains")
    _json_flag(p)
    p.set_defaults(func=cmd_list)

    p = sub.add_parser("dominfo", help="basic information about a domain")
    p.add_argument("name", metavar="NAME")
    _json_flag(p)
    p.set_defaults(func=cmd_dominfo)

    p = sub.add_parser("domstate", help="the domain's state (running, shut off, ...)")
    p.add_argument("name", metavar="NAME")
    p.add_argument("--reason", action="store_true", help="also say why")
    _json_flag(p)
    p.set_defaults(func=cmd_domstate)

    p = sub.add_parser("domiflist", help="the domain's interfaces and their host devices")
    p.add_argument("name", metavar="NAME")
    _json_flag(p)
    p.set_defaults(func=cmd_domiflist)

    p = sub.add_parser("dumpxml", help="a domain's XML (live form while it runs)")
    p.add_argument("name", metavar="NAME")
    p.add_argument("--security-info", action="store_true",
                   help="include graphics passwords (like virsh)")
    p.set_defaults(func=cmd_dumpxml)

    p = sub.add_parser("console", help="attach to the guest's serial console (Ctrl+] "
                       "detaches); --log prints the console log instead")
    p.add_argument("name", metavar="NAME")
    p.add_argument("--force", action="store_true",
                   help="take the console over from another attached `tapvirt console`")
    p.add_argument("--log", action="store_true",
                   help="print the serial console log and follow it (read-only)")
    p.add_argument("--no-follow", action="store_true",
                   help="with --log (implied): print what is there and exit")
    p.set_defaults(func=cmd_console)


def _print(args: argparse.Namespace, obj: dict[str, Any], text: str) -> None:
    if getattr(args, "json", False):
        from tapvirt.cli.common import print_json

        print_json({"ok": True, **obj})
    else:
        print(text)


def cmd_start(args: argparse.Namespace) -> int:
    from tapvirt.domains import api

    if args.verb_kind == "start":
        st = api.start(args.target, tun_node=args.tun_node, timeout=args.timeout,
                       paused=args.paused)
        text = f"Domain '{st.name}' started"
    else:
        st = api.create(args.target, tun_node=args.tun_node, timeout=args.timeout,
                        paused=args.paused)
        text = f"Domain '{st.name}' created from {args.target}"
    if not args.json:
        for w in st.warnings:  # what the checks found but did not stop the start for
            print(f"warning[{w['code']}]: {w['message']}" + (
                f"\n  fix: {w['fix']}" if w.get("fix") else ""), file=sys.stderr)
    _print(args, {"name": st.name, "state": st.state, "qemu_pid": st.qemu_pid,
                  "warnings": st.warnings}, text)
    return 0


def cmd_shutdown(args: argparse.Namespace) -> int:
    from tapvirt.domains import api

    st = api.shutdown(args.name, timeout=args.timeout, mode=args.mode)
    _print(args, {"name": args.name, "state": st.state, "reason": st.reason},
           f"Domain '{args.name}' is {st.state} ({st.reason})")
    return 0


def cmd_resume(args: argparse.Namespace) -> int:
    from tapvirt.domains import api

    st = api.resume(args.name)
    _print(args, {"name": args.name, "state": st.state}, f"Domain '{args.name}' resumed")
    return 0


def cmd_destroy(args: argparse.Namespace) -> int:
    from tapvirt.domains import api

    st = api.destroy(args.name)
    _print(args, {"name": args.name, "state": st.state},
           f"Domain '{args.name}' destroyed")
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    from tapvirt.domains import api

    rows = api.list_domains(include_inactive=args.all)
    if args.json:
        from tapvirt.cli.common import print_json

        print_json({"ok": True, "domains": [r.to_json() for r in rows]})
        return 0
    width = max([4, *(len(r.name) for r in rows)])
    print(f" {'Id':<4} {'Name':<{width}}   State")
    print("-" * (width + 22))
    for r in rows:
        ident = "-" if r.id is None else str(r.id)
        print(f" {ident:<4} {r.name:<{width}}   {r.state}")
    return 0


def cmd_dominfo(args: argparse.Namespace) -> int:
    from tapvirt.domains import api

    info = api.dominfo(args.name)
    if args.json:
        from tapvirt.cli.common import print_json

        print_json({"ok": True, **info})
        return 0
    rows = [
        ("Id", info["id"] if info["id"] is not None else "-"),
        ("Name", info["name"]), ("UUID", info["uuid"]),
        ("State", info["state"] + (f" ({info['reason']})" if info["reason"] else "")),
        ("CPU(s)", info["vcpus"]), ("Max memory", f"{info['memory_kib']} KiB"),
        ("Persistent", "yes" if info["persistent"] else "no"),
        ("Supervisor", info["supervisor_pid"] or ("none (QEMU runs alone)"
                                                  if info["state"] != "shut off" else "-")),
        ("Restarts", info["restarts"]),
        ("Console log", info["console_log"]), ("QEMU log", info["qemu_log"]),
    ]
    for k, v in rows:
        print(f"{k + ':':<16}{v}")
    return 0


def cmd_domstate(args: argparse.Namespace) -> int:
    from tapvirt.domains import api

    st = api.state_of(args.name)
    text = st.state + (f" ({st.reason})" if args.reason and st.reason else "")
    _print(args, {"name": args.name, "state": st.state, "reason": st.reason}, text)
    return 0


def cmd_domiflist(args: argparse.Namespace) -> int:
    from tapvirt.domains import api

    rows = api.domiflist(args.name)
    if args.json:
        from tapvirt.cli.common import print_json

        print_json({"ok": True, "interfaces": [
            {"interface": r.alias, "type": r.type, "device": r.device, "model": r.model,
             "mac": r.mac} for r in rows]})
        return 0
    print(f" {'Interface':<10} {'Type':<9} {'Device':<16} {'Model':<8} MAC")
    print("-" * 66)
    for r in rows:
        print(f" {r.alias:<10} {r.type:<9} {r.device or '-':<16} {r.model:<8} {r.mac}")
    return 0


def cmd_dumpxml(args: argparse.Namespace) -> int:
    from tapvirt.domains import api

    sys.stdout.write(api.dumpxml(args.name, security_info=args.security_info))
    return 0


def cmd_console(args: argparse.Namespace) -> int:
    from tapvirt.domains import api

    if not (args.log or args.no_follow):
        from tapvirt.domains.console import attach

        sys.stdout.flush()
        attach(args.name, force=args.force)
        return 0
    out = sys.stdout.buffer
    try:
        for chunk in api.follow_console(args.name, follow=not args.no_follow):
            out.write(chunk)
            out.flush()
    except BrokenPipeError:
        pass
    return 0
