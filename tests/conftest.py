"""Shared fixtures. Tests under tests/host, tests/e2e and tests/prep need root: they are
marked `root` automatically and skip with a reason when not run as root."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import settings

from tests.support.sandbox import (
    AsUser,
    CodeCopy,
    Netns,
    User,
    is_root,
    private_tun_node,
    world_readable_dir,
)

_ROOT_DIRS = ("host", "e2e", "prep", "cni")

# In CI the property tests draw the same examples every run, so a landing never depends
# on luck; locally (no CI variable) every run explores new ones. A failure found locally is
# a real bug with its reproduction blob printed.
settings.register_profile("ci", derandomize=True, print_blob=True)
settings.register_profile("dev", print_blob=True)
settings.load_profile("ci" if os.environ.get("CI") else "dev")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        parts = Path(str(item.fspath)).parts
        if any(d in parts for d in _ROOT_DIRS) and "tests" in parts:
            item.add_marker(pytest.mark.root)
        if item.get_closest_marker("root") and not is_root():
            item.add_marker(pytest.mark.skip(
                reason="needs root: creates network namespaces, users and devices"))


@pytest.fixture(scope="session")
def code_copy() -> Iterator[CodeCopy]:
    copy = CodeCopy.create()
    try:
        yield copy
    finally:
        copy.close()


@pytest.fixture
def netns() -> Iterator[Netns]:
    ns = Netns.create()
    try:
        yield ns
    finally:
        ns.close()


@pytest.fixture
def scratch() -> Iterator[Path]:
    """A world-traversable scratch directory (removed afterwards)."""
    path = world_readable_dir("tv-scratch-")
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def unpriv_user(scratch: Path) -> Iterator[User]:
    user = User.create(scratch)
    try:
        yield user
    finally:
        user.close()


@pytest.fixture
def tun_node(scratch: Path, unpriv_user: User) -> Path:
    return private_tun_node(scratch, unpriv_user.uid, unpriv_user.gid)


@pytest.fixture
def as_user(unpriv_user: User, netns: Netns, code_copy: CodeCopy) -> AsUser:
    return AsUser(unpriv_user, netns, code_copy)
