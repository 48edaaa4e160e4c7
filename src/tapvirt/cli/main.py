"""`tapvirt`: the unprivileged launcher's command line, a thin layer over the Python API.

Each group of verbs lives in its own module with a `register(subparsers)` function;
handlers import what they need when they run, so `tapvirt --version` and `tapvirt list`
stay fast.
"""

from __future__ import annotations

import importlib
import os
import sys
from typing import Any

# Modules that add verbs. Each has register(subparsers) -> None; every parser it adds
# sets `func` (args -> exit code).
COMMAND_MODULES: tuple[str, ...] = (
    "tapvirt.cli.conf_cmds",
    "tapvirt.cli.net_cmds",
    "tapvirt.cli.run_cmds",
    "tapvirt.cli.live_cmds",
    "tapvirt.cli.hotplug_cmds",
    "tapvirt.cli.fg_cmds",
    "tapvirt.cli.display_cmds",
)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args in (["--version"], ["-V"]):
        from tapvirt import __version__

        print(f"tapvirt {__version__}")
        return 0

    from tapvirt.cli.fast import parse as parse_fast

    ns: Any = parse_fast(args)  # start/create/destroy: no argparse (issue 14)
    if ns is None:
        ns = _parse_full(args)
        if isinstance(ns, int):
            return ns
    if ns.version:
        from tapvirt import __version__

        print(f"tapvirt {__version__}")
        return 0
    from tapvirt.cli.common import report_error
    from tapvirt.errors import INTERNAL, TapvirtError

    as_json = bool(getattr(ns, "json", False))
    try:
        return int(ns.func(ns))
    except TapvirtError as err:
        report_error(err, as_json=as_json)
        return 1
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # a bug: say so in one line, keep the traceback on request
        if "TAPVIRT_DEBUG" in os.environ:
            raise
        bug = TapvirtError(
            INTERNAL, "tapvirt", f"unexpected {type(exc).__name__}: {exc}",
            "please report this; run with TAPVIRT_DEBUG=1 for a traceback",
        )
        report_error(bug, as_json=as_json)
        return 70


def _parse_full(args: list[str]) -> Any:
    """argparse over every verb: the namespace, or the exit code of a usage error/help."""
    import argparse

    from tapvirt.cli.common import UsageError, json_aware_parser_class

    parser: argparse.ArgumentParser = json_aware_parser_class()(
        prog="tapvirt",
        description="Run QEMU guests without privileges on precreated tap/macvtap devices.",
    )
    parser.add_argument("-V", "--version", action="store_true", help="print the version")
    sub = parser.add_subparsers(dest="verb", metavar="VERB")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    try:
        ns = parser.parse_args(args)
    except UsageError as usage:  # --json anywhere: the error as JSON too
        return usage.report(as_json="--json" in args)
    if not ns.version and not hasattr(ns, "func"):
        parser.print_help()
        return 2
    return ns


def entry() -> None:
    """The console script: run, flush, and leave without the interpreter's teardown.

    Tearing down ~100 modules and their objects costs ~10 ms after the work is done (a
    start's guest is already running by then); every file tapvirt writes is closed
    explicitly, so only the standard streams need flushing.
    """
    try:
        rc = main()
    except SystemExit as exc:  # argparse's usage errors and --help
        rc = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 2)
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe: nothing more can be said
            rc = rc or 1
    os._exit(rc)


if __name__ == "__main__":
    entry()
