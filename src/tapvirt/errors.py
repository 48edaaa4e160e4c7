"""The one exception type of tapvirt, and the registry of its stable error codes.

Every failure a user can cause is a `TapvirtError` with a stable `code` (a short
kebab-case string that scripts may match on), the `subject` it is about (an XML
element or attribute, an interface, a device, a file), the `cause` in words, and a
`fix` that says exactly what to do, often an `ip` command for the privileged side.

Codes are declared with `define()` next to the code that raises them, so a layer
owns its codes; `all_codes()` lists them all for the documentation table
(`python -m tapvirt.errors --markdown`), which a test keeps in sync with
`docs/errors.md`.
"""

from __future__ import annotations

import importlib
import json
import sys
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class ErrorCode:
    """A stable error code and the one-line summary used in the docs table."""

    code: str
    summary: str
    layer: str
    warning: bool = False

    def __str__(self) -> str:
        return self.code


_REGISTRY: dict[str, ErrorCode] = {}


def define(code: str, summary: str, *, layer: str, warning: bool = False) -> ErrorCode:
    """Declare a stable error code. Declaring one code twice is a programming error."""
    if code in _REGISTRY:
        raise ValueError(f"error code {code!r} is declared twice")
    entry = ErrorCode(code, summary, layer, warning)
    _REGISTRY[code] = entry
    return entry


class TapvirtError(Exception):
    """A failure the user can understand and act on."""

    def __init__(
        self,
        code: ErrorCode,
        subject: str,
        cause: str,
        fix: str = "",
        *,
        line: int | None = None,
        details: dict[str, Any] | None = None,
    ) -> None:
        self.code = code
        self.subject = subject
        self.cause = cause
        self.fix = fix
        self.line = line
        self.details = dict(details or {})
        super().__init__(self.message)

    @property
    def message(self) -> str:
        where = f" (line {self.line})" if self.line is not None else ""
        return f"{self.subject}{where}: {self.cause}"

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "code": self.code.code,
            "subject": self.subject,
            "message": self.message,
            "cause": self.cause,
            "fix": self.fix,
            "warning": self.code.warning,
        }
        if self.line is not None:
            out["line"] = self.line
        if self.details:
            out["details"] = self.details
        return out

    def render(self) -> str:
        """The CLI's form: one readable line, then the fix on its own line."""
        text = f"error[{self.code.code}]: {self.message}"
        if self.fix:
            text += f"\n  fix: {self.fix}"
        return text


# Codes that belong to no single layer.
INTERNAL = define(
    "internal", "a bug in tapvirt: the message says what was unexpected", layer="general"
)
USAGE = define("usage", "the command line is wrong (unknown option, missing argument)", layer="cli")
FILE_UNREADABLE = define(
    "file-unreadable", "a file named on the command line cannot be read", layer="general"
)

# The modules that declare codes, imported by all_codes() so that the table is complete
# however little of tapvirt a process has loaded so far.
_CODE_MODULES = (
    "tapvirt.conf.errors",
    "tapvirt.conf.addresses",
    "tapvirt.conf.domain.cpu",
    "tapvirt.conf.devices.channel",
    "tapvirt.conf.devices.chardev",
    "tapvirt.conf.devices.graphics",
    "tapvirt.conf.devices.input",
    "tapvirt.conf.devices.iommu",
    "tapvirt.conf.devices.memory",
    "tapvirt.conf.devices.misc",
    "tapvirt.conf.domain.memhotplug",
    "tapvirt.conf.devices.netextras",
    "tapvirt.conf.devices.sound",
    "tapvirt.conf.devices.tpm",
    "tapvirt.conf.devices.refused",
    "tapvirt.netcodes",
    "tapvirt.domains.errors",
    "tapvirt.domains.live_errors",
    "tapvirt.domains.display",
    "tapvirt.domains.swtpm",
    "tapvirt.qemu.storage",
    "tapvirt.qemu.hostnuma",
    "tapvirt.qemu.hostaudio",
    "tapvirt.qemu.fwdesc",
    "tapvirt.prep.errors",
    "tapvirt.cni.errors",
)


def lookup(code: str) -> ErrorCode | None:
    """The declared code of that name, if its module has been imported."""
    return _REGISTRY.get(code)


def all_codes() -> list[ErrorCode]:
    for module in _CODE_MODULES:
        importlib.import_module(module)
    return sorted(_REGISTRY.values(), key=lambda c: (c.layer, c.code))


def markdown_table() -> str:
    rows = ["| code | layer | kind | meaning |", "|---|---|---|---|"]
    for c in all_codes():
        kind = "warning" if c.warning else "error"
        rows.append(f"| `{c.code}` | {c.layer} | {kind} | {c.summary} |")
    return "\n".join(rows) + "\n"


DOCS_MARKER = "<!-- generated: python -m tapvirt.errors --write-docs docs/errors.md -->"


def write_docs(path: str) -> None:
    """Replace everything after DOCS_MARKER in `path` with the current table."""
    with open(path, encoding="utf-8") as f:
        head = f.read().split(DOCS_MARKER)[0]
    with open(path, "w", encoding="utf-8") as f:
        f.write(head + DOCS_MARKER + "\n\n" + markdown_table())


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) == 2 and args[0] == "--write-docs":
        write_docs(args[1])
    elif args == ["--json"]:
        print(json.dumps([c.__dict__ for c in all_codes()], indent=2))
    else:
        print(markdown_table(), end="")
    return 0


if __name__ == "__main__":
    # Run the imported module's main: the code modules register into *its* registry,
    # not into this __main__ copy's.
    from tapvirt import errors as _errors  # noqa: PLW0406

    raise SystemExit(_errors.main())
