"""Helpers shared by the CLI verbs: printing results and errors, plain or as JSON."""

from __future__ import annotations

import json
import sys
import typing
from typing import Any

from tapvirt.errors import TapvirtError


def print_json(obj: Any) -> None:
    json.dump(obj, sys.stdout, indent=2, sort_keys=False)
    sys.stdout.write("\n")


def report_error(err: TapvirtError, *, as_json: bool) -> None:
    """Errors go to stderr in one readable line plus the fix; with --json, to stdout."""
    if as_json:
        print_json({"ok": False, "error": err.to_json()})
    else:
        print(err.render(), file=sys.stderr)


class UsageError(Exception):
    """A wrong command line (argparse's error), raised instead of argparse's exit so that
    `--json` callers get a JSON object rather than usage text."""

    def __init__(self, prog: str, usage: str, message: str) -> None:
        super().__init__(message)
        self.prog, self.usage, self.message = prog, usage, message

    def report(self, *, as_json: bool) -> int:
        if as_json:
            from tapvirt.errors import USAGE

            err = TapvirtError(USAGE, self.prog, self.message, f"see `{self.prog} --help`",
                               details={"usage": self.usage.strip()})
            print_json({"ok": False, "error": err.to_json()})
        else:  # argparse's own form
            sys.stderr.write(f"{self.usage}{self.prog}: error: {self.message}\n")
        return 2


def json_aware_parser_class() -> type:
    """An ArgumentParser whose usage errors raise UsageError (subparsers inherit it)."""
    import argparse

    class Parser(argparse.ArgumentParser):
        def error(self, message: str) -> typing.NoReturn:
            raise UsageError(self.prog, self.format_usage(), message)

    return Parser
