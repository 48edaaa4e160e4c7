"""Helpers shared by the CLI verbs: printing results and errors, plain or as JSON."""

from __future__ import annotations

import json
import sys
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
