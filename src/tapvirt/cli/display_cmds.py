"""Verbs on a running guest's display, virsh's names and output: domdisplay, screenshot.
Thin: the logic is in `tapvirt.domains.display`.
"""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("domdisplay", help="the URI of the guest's graphics display")
    p.add_argument("name", metavar="NAME")
    p.add_argument("--type", choices=("vnc", "spice"), dest="gtype",
                   help="the first display of this type (default: the first display)")
    p.add_argument("--include-password", action="store_true",
                   help="put the display's password into the URI")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(func=cmd_domdisplay)

    p = sub.add_parser("screenshot", help="write a PNG of the guest's display")
    p.add_argument("name", metavar="NAME")
    p.add_argument("file", metavar="FILE", nargs="?",
                   help="where to write it (default NAME-TIMESTAMP.png)")
    p.add_argument("--screen", type=int, default=0, metavar="N",
                   help="the display head (default 0)")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(func=cmd_screenshot)


def cmd_domdisplay(args: argparse.Namespace) -> int:
    from tapvirt.domains.display import domdisplay

    uri = domdisplay(args.name, gtype=args.gtype, include_password=args.include_password)
    if args.json:
        from tapvirt.cli.common import print_json

        print_json({"ok": True, "name": args.name, "uri": uri})
    else:
        print(uri)
    return 0


def cmd_screenshot(args: argparse.Namespace) -> int:
    from tapvirt.domains.display import screenshot

    path = screenshot(args.name, args.file, screen=args.screen)
    if args.json:
        from tapvirt.cli.common import print_json

        print_json({"ok": True, "name": args.name, "file": str(path), "format": "png"})
    else:
        print(f"Screenshot saved to {path}, with type of image/png")
    return 0
