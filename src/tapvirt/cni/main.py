"""`tapvirt-cni`: the executable a CNI runtime runs (see docs/cni.md).

Input: CNI_* variables and one JSON configuration on stdin. Output: the result (ADD,
VERSION) or nothing (DEL, CHECK, GC, STATUS) on stdout with exit 0; on failure the spec's
error object on stdout and exit 1. Logs go to stderr.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Mapping
from typing import Any, BinaryIO, TextIO


def run(env: Mapping[str, str], stdin: BinaryIO, stdout: TextIO) -> int:
    from tapvirt.cni import plugin
    from tapvirt.cni.config import MAX_STDIN, decode, parse_env
    from tapvirt.cni.errors import CNI_INTERNAL, error_object
    from tapvirt.errors import TapvirtError

    version = "1.1.0"
    try:
        cni_env = parse_env(env)
        raw = stdin.read(MAX_STDIN + 1)
        if cni_env.command == "VERSION" and not raw.strip():
            data: dict[str, Any] = {}
        else:
            data = decode(raw)
        asked = data.get("cniVersion")
        if isinstance(asked, str) and len(asked) <= 16:
            version = asked
        out = plugin.dispatch(cni_env, data)
    except TapvirtError as err:
        plugin.log(f"error code={json.dumps(err.code.code)} {json.dumps(err.message)}")
        json.dump(error_object(err, version), stdout)
        stdout.write("\n")
        return 1
    except OSError as exc:
        json.dump(error_object(plugin.kernel_error(exc), version), stdout)
        stdout.write("\n")
        return 1
    except Exception as exc:  # a bug: still the spec's error object, never a traceback
        if "TAPVIRT_DEBUG" in env:
            raise
        bug = TapvirtError(CNI_INTERNAL, "tapvirt-cni", f"unexpected {type(exc).__name__}: "
                           f"{exc}", "please report this; TAPVIRT_DEBUG=1 shows a traceback")
        json.dump(error_object(bug, version), stdout)
        stdout.write("\n")
        return 1
    if out is not None:
        json.dump(out, stdout)
        stdout.write("\n")
    return 0


def main() -> int:
    return run(os.environ, sys.stdin.buffer, sys.stdout)


if __name__ == "__main__":
    raise SystemExit(main())
