"""The decision log: every allow/deny and every change, with the rule that made it.

Every event is one JSON object on one line (`{"event": "allow", "requester": ...}`):
every field is quoted, so no file path, XML value or name a user controls (newlines,
quotes, control or non-ASCII characters included) can end a line or forge a field.
Lines go to syslog (facility authpriv, ident tapvirt-prep), to a log file when the
policy or root's --log-file names one, and to stderr with --verbose.
"""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Any

from tapvirt.errors import TapvirtError
from tapvirt.prep.errors import LOG_UNWRITABLE


class DecisionLog:
    def __init__(self, *, verbose: bool = False, log_file: str | None = None) -> None:
        self.verbose = verbose
        self.log_file = log_file
        self._syslog_open = False

    def event(self, kind: str, /, **fields: Any) -> None:
        """Log one event: a JSON object (ASCII only) that cannot span lines."""
        self._write(json.dumps({"event": kind, **fields}, ensure_ascii=True, default=str))

    def _write(self, line: str) -> None:
        if self.verbose:
            print(f"tapvirt-prep: {line}", file=sys.stderr)
        try:
            import syslog

            if not self._syslog_open:
                syslog.openlog("tapvirt-prep", syslog.LOG_PID, syslog.LOG_AUTHPRIV)
                self._syslog_open = True
            syslog.syslog(syslog.LOG_NOTICE, line)
        except OSError:  # no syslog daemon: the other sinks still have it
            pass
        if self.log_file:
            stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
            data = f"{stamp} [{os.getpid()}] {line}\n".encode()
            # O_NOFOLLOW: a symlink planted at the log path is refused, not written through.
            try:
                fd = os.open(self.log_file, os.O_WRONLY | os.O_APPEND | os.O_CREAT
                             | os.O_NOFOLLOW | os.O_CLOEXEC, 0o640)
                try:
                    os.write(fd, data)
                finally:
                    os.close(fd)
            except OSError as exc:
                # no audit trail, no action: fail closed
                raise TapvirtError(
                    LOG_UNWRITABLE, f"log file {self.log_file}", exc.strerror or str(exc),
                    "fix the path or permissions ([settings] log_file, --log-file); "
                    "a symlink there is refused",
                ) from None

    def decision(self, requester: str, verdict: str, rule: str, what: str, reason: str) -> None:
        self.event(verdict, requester=requester, rule=rule, request=what, reason=reason)
