"""Reaping detached supervisors in tests.

A supervisor detaches from `tapvirt start` (double fork) and is adopted by the nearest
child subreaper, normally init, which reaps it when it ends. Under a test runner whose
ancestor is a subreaper that never reaps, ended supervisors would stay zombies; tests
that start guests make the test process the subreaper and reap them.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import time
from collections.abc import Iterator

import pytest

PR_SET_CHILD_SUBREAPER = 36


def become_subreaper() -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)


def reap_orphans() -> int:
    """Reap every ended child without blocking; returns how many were reaped."""
    n = 0
    with contextlib.suppress(ChildProcessError):
        while os.waitpid(-1, os.WNOHANG)[0]:
            n += 1
    return n


@pytest.fixture(scope="module", autouse=True)
def reap_module_orphans() -> Iterator[None]:
    """Imported by a test module that starts guests: the test process becomes the
    subreaper for the module, and the ended supervisors are reaped after it (a short
    grace lets the last of them exit first)."""
    become_subreaper()
    yield
    time.sleep(0.2)
    reap_orphans()

