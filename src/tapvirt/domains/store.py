"""The definitions store: one canonical XML file per domain.

Layout: `$XDG_CONFIG_HOME/tapvirt/domains/NAME.xml` (fallback `~/.config/tapvirt/...`);
`tapvirt/` and `domains/` are mode 0700, files 0600. Writers take an exclusive `flock` on
`domains/.lock` for the check-then-write of define/undefine; each file is replaced
atomically (temporary file, fsync, rename, fsync of the directory), so readers need no
lock and never see half a definition.

libvirt's identity rules apply: a name keeps its uuid (redefining with another uuid is an
error, redefining without `<uuid>` keeps the stored one) and a uuid belongs to one name.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import stat
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from tapvirt.conf import errors as conf_errors
from tapvirt.conf.rules import MAX_NAME, NAME_RE
from tapvirt.domains import errors as E
from tapvirt.errors import TapvirtError

if TYPE_CHECKING:
    from tapvirt.conf.model import Domain
# conf.parse and conf.format (and the model) load only when a definition is read or
# written: `tapvirt list` needs just the file names and stays fast (bench/cli_startup.py).

__all__ = ["DefineResult", "Store", "config_dir"]

_UUID_IN_FILE = re.compile(r"<uuid>([0-9a-f-]{36})</uuid>")
_SUFFIX = ".xml"
# The parsed model of each definition is cached beside it (".NAME.model", a pickle), so that
# `tapvirt start` needs neither lxml nor the parser (~30 ms of imports). The cache is used
# only when it was made from exactly the XML now in the file and by this version of the
# model; anything else (a hand-edited XML file, a newer tapvirt) parses the XML again.
# It lives in the user's private 0700 directory, as trusted as the XML beside it.
_CACHE_SUFFIX = ".model"
_CACHE_FORMAT = 1


def config_dir(env: Mapping[str, str] | None = None) -> Path:
    """`$XDG_CONFIG_HOME/tapvirt`, or `~/.config/tapvirt` (XDG: a relative value is ignored)."""
    env = os.environ if env is None else env
    xdg = env.get("XDG_CONFIG_HOME", "")
    if xdg and os.path.isabs(xdg):
        return Path(xdg) / "tapvirt"
    home = env.get("HOME") or os.path.expanduser("~")
    return Path(home) / ".config" / "tapvirt"


@dataclass(frozen=True)
class DefineResult:
    domain: Domain
    created: bool  # False: an existing definition was replaced
    path: Path


class Store:
    """Definitions of one user. Cheap to create; directories are made on first write."""

    def __init__(self, root: Path | None = None) -> None:
        self.root = root if root is not None else config_dir()
        self.dir = self.root / "domains"

    # -- reading

    def names(self) -> list[str]:
        try:
            entries = os.listdir(self.dir)
        except FileNotFoundError:
            return []
        except OSError as exc:
            raise self._unusable(self.dir, exc) from None
        return sorted(
            e[: -len(_SUFFIX)] for e in entries
            if e.endswith(_SUFFIX) and not e.startswith(".") and _valid_name(e[: -len(_SUFFIX)])
        )

    def exists(self, name: str) -> bool:
        if not _valid_name(name):
            return False
        try:
            return stat.S_ISREG(os.stat(self.path(name)).st_mode)
        except (FileNotFoundError, NotADirectoryError):
            return False
        except OSError as exc:  # e.g. the directory is not searchable: say so by name
            raise self._unusable(self.dir, exc) from None

    def path(self, name: str) -> Path:
        return self.dir / f"{name}{_SUFFIX}"

    def get_xml(self, name: str) -> str:
        """The stored canonical XML of `name`."""
        self._check_name(name)
        try:
            return self.path(name).read_text(encoding="utf-8")
        except FileNotFoundError:
            raise _not_found(name) from None
        except (OSError, UnicodeDecodeError) as exc:
            raise TapvirtError(
                E.STORE_CORRUPT, str(self.path(name)), f"cannot read the definition: {exc}",
                f"check the file, or undefine and define '{name}' again",
            ) from None

    def get(self, name: str) -> Domain:
        text = self.get_xml(name)
        key = _cache_key(text)
        cached = self._read_cache(name, key)
        if cached is not None:
            return cached
        dom = self._parse_stored(name, text)
        self._write_cache(name, key, dom)
        return dom

    def _parse_stored(self, name: str, text: str) -> Domain:
        from tapvirt.conf.parse import parse_document

        path = self.path(name)
        try:
            dom = parse_document(text, source=str(path)).domain
        except TapvirtError as err:
            raise TapvirtError(
                E.STORE_CORRUPT, str(path),
                f"the stored definition is no longer valid: {err.message}",
                f"fix the file by hand, or define '{name}' again from your XML",
                details={"cause": err.to_json()},
            ) from None
        if dom.name != name:
            raise TapvirtError(
                E.STORE_CORRUPT, str(path),
                f"the file defines domain '{dom.name}', not '{name}'",
                f"rename the file to {dom.name}{_SUFFIX} or fix <name>",
            )
        return dom

    def domains(self) -> list[Domain]:
        """Every definition, sorted by name."""
        return [self.get(n) for n in self.names()]

    # -- writing

    def define(self, xml: str | bytes, *, source: str = "<string>") -> DefineResult:
        """Parse, validate and store a definition; replaces one of the same name."""
        from tapvirt.conf.format import format_domain
        from tapvirt.conf.parse import parse_document

        parsed = parse_document(xml, source=source)
        dom = parsed.domain
        with self._locked():
            existing_uuid = self._stored_uuid(dom.name)
            if existing_uuid is not None and existing_uuid != dom.uuid:
                if parsed.uuid_generated:
                    dom = replace(dom, uuid=existing_uuid)  # keep the name's identity
                else:
                    raise TapvirtError(
                        E.DOMAIN_NAME_TAKEN, f"domain '{dom.name}'",
                        f"domain '{dom.name}' already exists with uuid {existing_uuid}",
                        f"use <uuid>{existing_uuid}</uuid> (or leave <uuid> out) to redefine "
                        f"it, or `tapvirt undefine {dom.name}` first",
                    )
            for other in self.names():
                if other != dom.name and self._stored_uuid(other) == dom.uuid:
                    raise TapvirtError(
                        E.DOMAIN_UUID_TAKEN, f"domain '{dom.name}'",
                        f"domain '{other}' is already defined with uuid {dom.uuid}",
                        "leave <uuid> out to have a fresh one generated, or undefine "
                        f"'{other}' first",
                    )
            path = self.path(dom.name)
            text = format_domain(dom)
            self._write_atomically(path, text)
            # Cache what the stored text parses to (not `dom`): reading it back is the truth.
            self._write_cache(dom.name, _cache_key(text), self._parse_stored(dom.name, text))
        return DefineResult(dom, existing_uuid is None, path)

    def undefine(self, name: str) -> Domain | None:
        """Remove a definition; returns what it was (None: the file was damaged)."""
        self._check_name(name)
        with self._locked():
            try:
                dom = self.get(name)
            except TapvirtError as err:
                if err.code is not E.STORE_CORRUPT:
                    raise
                dom = None  # a damaged file can still be removed
            with contextlib.suppress(OSError):
                os.unlink(self._cache_path(name))
            try:
                os.unlink(self.path(name))
            except FileNotFoundError:
                raise _not_found(name) from None
            except OSError as exc:
                raise self._unusable(self.path(name), exc) from None
            _fsync_dir(self.dir)
        return dom

    # -- the model cache

    def _cache_path(self, name: str) -> Path:
        return self.dir / f".{name}{_CACHE_SUFFIX}"

    def _read_cache(self, name: str, key: str) -> Domain | None:
        import pickle

        from tapvirt.conf.model import Domain

        try:
            with open(self._cache_path(name), "rb") as f:
                fmt, stored_key, dom = pickle.load(f)  # noqa: S301 (our own 0700 directory)
        except FileNotFoundError:
            return None
        except Exception:  # damaged, or written by another version: parse the XML instead
            return None
        if fmt != _CACHE_FORMAT or stored_key != key or not isinstance(dom, Domain):
            return None
        return dom if dom.name == name else None

    def _write_cache(self, name: str, key: str, dom: Domain) -> None:
        """Best effort: without a cache, starts only parse the XML again."""
        import pickle

        if not self.dir.is_dir():
            return
        try:
            tmp_fd, tmp_name = tempfile.mkstemp(prefix=".tmp-", dir=self.dir)
        except OSError:
            return
        try:
            with os.fdopen(tmp_fd, "wb") as f:
                pickle.dump((_CACHE_FORMAT, key, dom), f, protocol=pickle.HIGHEST_PROTOCOL)
            os.replace(tmp_name, self._cache_path(name))
        except OSError:
            with contextlib.suppress(OSError):
                os.unlink(tmp_name)

    # -- internals

    def _check_name(self, name: str) -> None:
        if not _valid_name(name):
            raise TapvirtError(
                conf_errors.INVALID_NAME, f"domain '{name[:80]}'",
                "not a valid domain name (1-64 of A-Z a-z 0-9 _ . + -)",
                "check the spelling; `tapvirt list --all` shows the defined domains",
            )

    def _stored_uuid(self, name: str) -> str | None:
        try:
            text = self.path(name).read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise self._unusable(self.path(name), exc) from None
        m = _UUID_IN_FILE.search(text)
        return m.group(1) if m else None

    def _ensure_dirs(self) -> None:
        for d in (self.root, self.dir):
            try:
                d.mkdir(mode=0o700, parents=True, exist_ok=True)
                st = d.stat()
                if st.st_uid != os.geteuid():
                    raise TapvirtError(
                        E.STORE_UNUSABLE, str(d), f"the directory belongs to uid {st.st_uid}",
                        f"use your own directory (set XDG_CONFIG_HOME) or chown {d}",
                    )
                if st.st_mode & 0o077:
                    os.chmod(d, 0o700)  # definitions name devices: keep them private
            except OSError as exc:
                raise self._unusable(d, exc) from None

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self._ensure_dirs()
        try:
            fd = os.open(self.dir / ".lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            raise self._unusable(self.dir / ".lock", exc) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # closing releases the lock

    def _write_atomically(self, path: Path, text: str) -> None:
        tmp_fd, tmp_name = -1, ""
        try:
            tmp_fd, tmp_name = tempfile.mkstemp(prefix=".tmp-", suffix=_SUFFIX, dir=self.dir)
            data = text.encode("utf-8")
            view = memoryview(data)
            while view:
                view = view[os.write(tmp_fd, view):]
            os.fsync(tmp_fd)
            os.close(tmp_fd)
            tmp_fd = -1
            os.replace(tmp_name, path)
            tmp_name = ""
            _fsync_dir(self.dir)
        except OSError as exc:
            raise self._unusable(path, exc) from None
        finally:
            if tmp_fd >= 0:
                os.close(tmp_fd)
            if tmp_name:
                with contextlib.suppress(OSError):
                    os.unlink(tmp_name)

    @staticmethod
    def _unusable(path: Path, exc: OSError) -> TapvirtError:
        return TapvirtError(
            E.STORE_UNUSABLE, str(path), f"{exc.strerror or exc}",
            "check the permissions of the directory and the free space, or set "
            "XDG_CONFIG_HOME to a directory you own",
        )


def _cache_key(text: str) -> str:
    """Identifies the XML text and the model code the cached object was built with: the
    text itself (definitions are small; comparing is cheaper than importing hashlib) and
    the size and mtime of every module of `tapvirt.conf` (the model types live in
    `conf/model.py` and in the family modules under `conf/devices/`)."""
    from tapvirt import conf

    parts: list[str] = []
    for folder in (conf.__path__[0], os.path.join(conf.__path__[0], "devices")):
        with os.scandir(folder) as entries:
            for entry in sorted(entries, key=lambda e: e.name):
                if entry.name.endswith(".py"):
                    st = entry.stat()
                    parts.append(f"{entry.name}:{st.st_mtime_ns}:{st.st_size}")
    return f"{'|'.join(parts)}|{text}"


def _valid_name(name: str) -> bool:
    return 0 < len(name) <= MAX_NAME and NAME_RE.match(name) is not None


def _not_found(name: str) -> TapvirtError:
    return TapvirtError(
        E.DOMAIN_NOT_FOUND, f"domain '{name}'", f"failed to get domain '{name}'",
        "`tapvirt list --all` shows the defined domains; `tapvirt define FILE` adds one",
    )


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
