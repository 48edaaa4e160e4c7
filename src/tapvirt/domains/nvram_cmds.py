"""`undefine --nvram` / `--keep-nvram`: virsh refuses to undefine a domain whose NVRAM file
exists unless told what to do with it; tapvirt does the same."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from tapvirt.errors import USAGE, TapvirtError

if TYPE_CHECKING:
    from tapvirt.domains.store import Store


def check_undefine(store: Store, name: str, *, remove: bool, keep: bool) -> Path | None:
    """The domain's existing NVRAM file (None: none), or the refusal."""
    from tapvirt.qemu.fwdesc import NVRAM_EXISTS, nvram_path

    if remove and keep:
        raise TapvirtError(USAGE, "undefine", "--nvram and --keep-nvram are exclusive",
                           "pass only one of them")
    if not store.exists(name):
        return None  # undefine itself says the domain is not defined
    try:
        dom = store.get(name)
    except TapvirtError:
        return None  # a damaged definition can still be removed
    path = nvram_path(dom)
    if path is None or not path.exists():
        return None
    if not remove and not keep:
        raise TapvirtError(
            NVRAM_EXISTS, f"domain '{name}'",
            f"cannot undefine domain with nvram ({path})",
            f"`tapvirt undefine {name} --nvram` removes it too, `--keep-nvram` keeps it")
    return path


def remove_nvram(path: Path) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    except OSError as exc:
        from tapvirt.qemu.fwdesc import NVRAM_UNUSABLE

        raise TapvirtError(NVRAM_UNUSABLE, f"<nvram>{path}</nvram>",
                           f"the definition is gone but the file stays: {exc.strerror}",
                           f"rm {path}") from None
