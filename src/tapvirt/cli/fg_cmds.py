"""`tapvirt run`: start a guest and stay in the foreground as its supervisor's parent,
for containers (the logic is in `tapvirt.domains.foreground`)."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "run", help="start a guest in the foreground (for containers): console on stdout, "
        "SIGTERM powers it off, exit with the guest",
        description="Start FILE (defining it first) or the defined domain NAME, copy its "
        "serial console log to stdout, turn SIGTERM/SIGINT into an ACPI power-down "
        "(destroy after --shutdown-timeout), and exit when the guest has ended: 0 after a "
        "power-off, 3 after a crash or destroy, 1 if it could not start.")
    p.add_argument("target", metavar="FILE|NAME")
    p.add_argument("--tun-node", metavar="PATH",
                   help="tun clone device to open taps with (default /dev/net/tun; "
                        "env TAPVIRT_TUN_NODE)")
    p.add_argument("--timeout", type=float, default=30.0, metavar="S",
                   help="seconds to wait for QEMU to answer at start (default 30)")
    p.add_argument("--shutdown-timeout", type=float, default=60.0, metavar="S",
                   help="seconds from SIGTERM's ACPI power-down to destroy (default 60)")
    p.add_argument("--no-console", action="store_true",
                   help="do not copy the console log to stdout")
    p.set_defaults(func=cmd_run)


def cmd_run(args: argparse.Namespace) -> int:
    from tapvirt.domains import foreground

    return foreground.run(args.target, tun_node=args.tun_node, start_timeout=args.timeout,
                          shutdown_timeout=args.shutdown_timeout,
                          console=not args.no_console)
