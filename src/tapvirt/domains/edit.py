"""`tapvirt edit NAME`: the stored definition in $VISUAL / $EDITOR, like `virsh edit`.

The definition is written to a private temporary file (0600, in a 0700 directory of its
own), the editor runs on it, and the result is validated by the same parser as `define`.
It is redefined only if it is valid and changed; a running guest keeps running with its
live definition (the change applies at the next start). An invalid result: an
interactive session is asked whether to edit again (virsh's "Try again?"), anything else
fails with edit-failed and changes nothing.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass

from tapvirt.domains import api
from tapvirt.domains.live_errors import EDIT_FAILED
from tapvirt.errors import TapvirtError


@dataclass(frozen=True)
class EditResult:
    name: str
    changed: bool


def editor_command() -> list[str]:
    text = os.environ.get("VISUAL") or os.environ.get("EDITOR") or "vi"
    try:
        argv = shlex.split(text)
    except ValueError:
        argv = []
    if not argv:
        raise TapvirtError(EDIT_FAILED, "editor", f"cannot read the editor command {text!r}",
                           "set EDITOR to a command, e.g. EDITOR=nano")
    return argv


def _interactive() -> bool:
    return sys.stdin.isatty() and sys.stderr.isatty()


def _ask_again(err: TapvirtError) -> bool:
    print(err.render(), file=sys.stderr)
    while True:
        print("Failed. Try again? [y,n,?]: ", end="", file=sys.stderr, flush=True)
        answer = sys.stdin.readline().strip().lower()
        if answer in ("y", "n"):
            return answer == "y"
        if not answer and sys.stdin.closed:
            return False
        print("y - yes, start editor again\nn - no, throw away my changes", file=sys.stderr)


def edit(name: str, *, ask: Callable[[TapvirtError], bool] | None = None) -> EditResult:
    """Edit the stored definition; returns whether it changed. `ask` decides about an
    invalid edit (default: ask on a terminal, else give up)."""
    from tapvirt.conf.parse import parse_document

    store = api._store()
    if not store.exists(name):
        if api.state_of(name).transient:
            raise TapvirtError(EDIT_FAILED, f"domain {name}",
                               "it is transient: there is no stored definition to edit",
                               f"define it first: tapvirt dumpxml {name} > F && "
                               "tapvirt define F")
        raise api._not_found(name)
    original: str = store.get_xml(name)
    if ask is None:
        ask = _ask_again if _interactive() else (lambda err: False)
    tmpdir = tempfile.mkdtemp(prefix="tapvirt-edit-")  # 0700, ours alone
    path = os.path.join(tmpdir, f"{name}.xml")
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(original)
        while True:
            _run_editor(path)
            with open(path, encoding="utf-8", errors="replace") as f:
                text = f.read()
            if text == original:
                return EditResult(name, False)
            try:
                parsed = parse_document(text, source=f"edited {name}")
                if parsed.domain.name != name:
                    raise TapvirtError(
                        EDIT_FAILED, f"domain {name}",
                        f"the edit renames it to {parsed.domain.name!r}",
                        "keep <name>; to copy it, define the edited file under a new name")
                store.define(text, source=f"edited {name}")
                return EditResult(name, True)
            except TapvirtError as err:
                if ask(err):
                    continue
                raise TapvirtError(
                    EDIT_FAILED, f"domain {name}",
                    f"the edited definition is invalid, nothing was changed: {err.render()}",
                    f"run tapvirt edit {name} again and fix it") from None
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)


def _run_editor(path: str) -> None:
    argv = [*editor_command(), path]
    try:
        rc = subprocess.call(argv)
    except OSError as exc:
        raise TapvirtError(EDIT_FAILED, "editor", f"cannot run {argv[0]}: {exc.strerror}",
                           "set VISUAL or EDITOR to an installed editor") from None
    if rc != 0:
        with contextlib.suppress(OSError):
            os.unlink(path)
        raise TapvirtError(EDIT_FAILED, "editor", f"{argv[0]} exited with status {rc}: "
                           "nothing was changed", "edit again and save normally")
