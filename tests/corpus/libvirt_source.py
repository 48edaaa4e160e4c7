"""Fetch libvirt 9.0's source as Debian 12 ships it (the orig tarball plus Debian's patches)
into the corpus cache, for its `tests/qemuxml2argvdata` inputs.

    python -m tests.corpus.libvirt_source [--cache DIR]     (root: runs apt-get)

Debian's apt sources on these machines have no deb-src line; a private sources list and
private package lists in a temporary directory are used instead, so the machine's apt
configuration is not changed. The result is DIR/libvirt-9.0.0 (default
/var/cache/tapvirt-corpus), world-readable. Never commit it.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

CACHE = Path("/var/cache/tapvirt-corpus")
SOURCE_DIR = "libvirt-9.0.0"
KEYRING = "/usr/share/keyrings/debian-archive-keyring.gpg"


def _archive_uri() -> str:
    """The archive the machine's own apt sources name (the first URIs: line)."""
    for line in Path("/etc/apt/sources.list.d/debian.sources").read_text().splitlines():
        if line.startswith("URIs:"):
            return line.split()[1]
    raise SystemExit("no URIs: line in /etc/apt/sources.list.d/debian.sources")


def fetch(cache: Path = CACHE) -> Path:
    target = cache / SOURCE_DIR
    if (target / "tests" / "qemuxml2argvtest.c").is_file():
        return target
    with tempfile.TemporaryDirectory(prefix="tv-libvirt-src-") as tmp:
        d = Path(tmp)
        (d / "lists" / "partial").mkdir(parents=True)
        (d / "sources.list").write_text(
            f"deb-src [signed-by={KEYRING}] {_archive_uri()} bookworm main\n")
        opts = ["-o", f"Dir::Etc::SourceList={d / 'sources.list'}",
                "-o", "Dir::Etc::SourceParts=/dev/null", "-o", f"Dir::State::Lists={d / 'lists'}"]
        subprocess.run(["apt-get", *opts, "-q", "update"], check=True, stdout=subprocess.DEVNULL)
        subprocess.run(["apt-get", *opts, "-q", "source", "--download-only", "libvirt"],
                       check=True, cwd=d, stdout=subprocess.DEVNULL)
        tarball = next(d.glob("libvirt_9.0.0.orig.tar.xz"))
        debian = next(d.glob("libvirt_9.0.0-*.debian.tar.xz"))
        work = d / "x"
        work.mkdir()
        subprocess.run(["tar", "-xf", str(tarball), "-C", str(work)], check=True)
        subprocess.run(["tar", "-xf", str(debian), "-C", str(work / SOURCE_DIR)], check=True)
        src = work / SOURCE_DIR
        patches = src / "debian" / "patches"
        for name in (patches / "series").read_text().split():
            with (patches / name).open("rb") as patch:
                subprocess.run(["patch", "-p1", "-s", "--no-backup-if-mismatch"], stdin=patch,
                               cwd=src, check=True)
        cache.mkdir(parents=True, exist_ok=True)
        cache.chmod(0o755)
        shutil.move(str(src), str(target))
    subprocess.run(["chmod", "-R", "a+rX", str(target)], check=True)
    return target


def main() -> int:
    ap = argparse.ArgumentParser(prog="python -m tests.corpus.libvirt_source")
    ap.add_argument("--cache", type=Path, default=CACHE, metavar="DIR")
    args = ap.parse_args()
    print(fetch(args.cache) / "tests" / "qemuxml2argvdata")
    return 0


if __name__ == "__main__":
    sys.exit(main())
