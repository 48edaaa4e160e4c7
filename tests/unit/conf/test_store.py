"""The definitions store: location, permissions, identity rules, atomic and concurrent writes."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tapvirt.conf.format import format_domain
from tapvirt.conf.parse import parse_domain
from tapvirt.domains.store import Store, config_dir
from tapvirt.errors import TapvirtError

SRC = Path(__file__).resolve().parents[3] / "src"


def xml(name: str = "guest", uuid: str | None = None, mac: str = "52:54:00:11:11:11") -> str:
    u = f"<uuid>{uuid}</uuid>" if uuid else ""
    return (
        f"<domain type='qemu'><name>{name}</name>{u}<memory unit='MiB'>64</memory>"
        "<os><type>hvm</type></os><devices><interface type='ethernet'>"
        f"<mac address='{mac}'/><target dev='mytap0' managed='no'/>"
        "<model type='virtio'/></interface></devices></domain>"
    )


U1 = "4dea22b3-1d52-d8f3-2516-782e98ab3fa0"
U2 = "11111111-2222-3333-4444-555555555555"


def test_config_dir_follows_xdg_and_falls_back_to_home() -> None:
    assert config_dir({"XDG_CONFIG_HOME": "/x/cfg", "HOME": "/h"}) == Path("/x/cfg/tapvirt")
    assert config_dir({"HOME": "/h"}) == Path("/h/.config/tapvirt")
    # the XDG spec: a relative XDG_CONFIG_HOME is invalid and ignored
    assert config_dir({"XDG_CONFIG_HOME": "rel", "HOME": "/h"}) == Path("/h/.config/tapvirt")


def test_define_get_list_undefine(tmp_path: Path) -> None:
    store = Store(tmp_path / "tapvirt")
    res = store.define(xml(uuid=U1))
    assert res.created and res.domain.name == "guest" and res.domain.uuid == U1
    assert store.names() == ["guest"]
    assert store.get("guest") == res.domain
    assert store.get_xml("guest") == format_domain(res.domain)
    assert [d.name for d in store.domains()] == ["guest"]
    assert store.undefine("guest") == res.domain
    assert store.names() == []
    with pytest.raises(TapvirtError) as info:
        store.get("guest")
    assert info.value.code.code == "domain-not-found"
    with pytest.raises(TapvirtError) as info:
        store.undefine("guest")
    assert info.value.code.code == "domain-not-found"


def test_directories_are_private_and_files_0600(tmp_path: Path) -> None:
    root = tmp_path / "tapvirt"
    root.mkdir(mode=0o755)
    os.chmod(root, 0o755)  # a pre-existing, too open directory is tightened
    old = os.umask(0)
    try:
        Store(root).define(xml())
    finally:
        os.umask(old)
    assert stat.S_IMODE(root.stat().st_mode) == 0o700
    assert stat.S_IMODE((root / "domains").stat().st_mode) == 0o700
    assert stat.S_IMODE((root / "domains" / "guest.xml").stat().st_mode) == 0o600


def test_redefine_replaces_and_keeps_uuid_when_absent(tmp_path: Path) -> None:
    store = Store(tmp_path)
    first = store.define(xml(uuid=U1)).domain
    again = store.define(xml(mac="52:54:00:aa:bb:cc"))  # no <uuid>: keep the name's uuid
    assert not again.created
    assert again.domain.uuid == first.uuid
    assert store.get("guest").devices.interfaces[0].mac == "52:54:00:aa:bb:cc"


def test_redefine_with_another_uuid_is_refused(tmp_path: Path) -> None:
    store = Store(tmp_path)
    store.define(xml(uuid=U1))
    with pytest.raises(TapvirtError) as info:
        store.define(xml(uuid=U2))
    assert info.value.code.code == "domain-name-taken"
    assert f"domain 'guest' already exists with uuid {U1}" in info.value.message
    assert store.get("guest").uuid == U1  # unchanged


def test_uuid_belongs_to_one_name(tmp_path: Path) -> None:
    store = Store(tmp_path)
    store.define(xml("a", uuid=U1))
    with pytest.raises(TapvirtError) as info:
        store.define(xml("b", uuid=U1))
    assert info.value.code.code == "domain-uuid-taken"
    assert f"domain 'a' is already defined with uuid {U1}" in info.value.message
    assert store.names() == ["a"]


def test_invalid_xml_is_not_stored(tmp_path: Path) -> None:
    store = Store(tmp_path)
    with pytest.raises(TapvirtError) as info:
        store.define(xml().replace("managed='no'", "managed='maybe'"))
    assert info.value.code.code == "invalid-value"
    assert store.names() == []


def test_names_that_could_escape_the_directory_are_refused(tmp_path: Path) -> None:
    store = Store(tmp_path)
    for bad in ("../x", "a/b", "", ".hidden"):
        with pytest.raises(TapvirtError) as info:
            store.get_xml(bad)
        assert info.value.code.code == "invalid-domain-name"


def test_a_failed_write_keeps_the_old_definition_and_no_temp_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = Store(tmp_path)
    store.define(xml(uuid=U1))
    before = store.get_xml("guest")

    def boom(src: str, dst: str) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(TapvirtError) as info:
        store.define(xml(uuid=U1, mac="52:54:00:aa:bb:cc"))
    assert info.value.code.code == "store-unusable"
    assert "No space left on device" in info.value.message
    assert store.get_xml("guest") == before
    assert sorted(p.name for p in store.dir.iterdir()) == [".guest.model", ".lock", "guest.xml"]


def test_redefine_replaces_the_file_by_rename(tmp_path: Path) -> None:
    """A reader holding the old file keeps a complete old definition (no in-place write)."""
    store = Store(tmp_path)
    store.define(xml(uuid=U1))
    with open(store.path("guest"), encoding="utf-8") as old:
        store.define(xml(uuid=U1, mac="52:54:00:aa:bb:cc"))
        old_text = old.read()
    assert parse_domain(old_text).devices.interfaces[0].mac == "52:54:00:11:11:11"
    assert store.get("guest").devices.interfaces[0].mac == "52:54:00:aa:bb:cc"


def test_a_damaged_file_is_reported_and_can_be_undefined(tmp_path: Path) -> None:
    store = Store(tmp_path)
    store.define(xml())
    store.path("guest").write_text("<domain")
    with pytest.raises(TapvirtError) as info:
        store.get("guest")
    assert info.value.code.code == "store-corrupt"
    assert store.undefine("guest") is None
    assert store.names() == []


_WORKER = """
import sys, time
from pathlib import Path
from tapvirt.domains.store import Store
root, idx, start = Path(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
while time.time() < start:
    time.sleep(0.001)
store = Store(root)
for i in range(15):
    mac = "52:54:00:00:%02x:%02x" % (idx, i)
    doc = sys.argv[4].replace("NAME", "shared").replace("MAC", mac)
    store.define(doc)
    store.define(sys.argv[4].replace("NAME", "own-%d" % idx).replace("MAC", mac))
    print(store.get("shared").uuid)
"""


def test_concurrent_defines_do_not_corrupt(tmp_path: Path) -> None:
    root = tmp_path / "tapvirt"
    template = xml("NAME", mac="MAC")
    start = time.time() + 0.5
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _WORKER, str(root), str(i), str(start), template],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        for i in range(8)
    ]
    seen: set[str] = set()
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        seen.update(out.split())
    # the first define of 'shared' fixed its uuid; no racing define replaced it
    assert len(seen) == 1
    store = Store(root)
    assert store.names() == sorted(["shared", *(f"own-{i}" for i in range(8))])
    # every file is a complete, valid definition; 'shared' kept one identity throughout
    uuids = {d.name: d.uuid for d in store.domains()}
    assert len(set(uuids.values())) == 9
    last_macs = {f"52:54:00:00:{i:02x}:0e" for i in range(8)}
    assert store.get("shared").devices.interfaces[0].mac in last_macs
    leftovers = [p.name for p in store.dir.iterdir()
                 if p.name.startswith(".") and not p.name.endswith(".model")]
    assert leftovers == [".lock"]


def test_an_unusable_location_is_a_clear_error(tmp_path: Path) -> None:
    blocker = tmp_path / "tapvirt"
    blocker.write_text("not a directory")
    with pytest.raises(TapvirtError) as info:
        Store(blocker).define(xml())
    assert info.value.code.code == "store-unusable"
    assert info.value.subject == str(blocker)
    assert "XDG_CONFIG_HOME" in info.value.fix


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to give the directory away")
def test_a_directory_of_another_user_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "tapvirt"
    root.mkdir(mode=0o700)
    os.chown(root, 65534, 65534)
    with pytest.raises(TapvirtError) as info:
        Store(root).define(xml())
    assert info.value.code.code == "store-unusable"
    assert "belongs to uid 65534" in info.value.message


def test_failures_leak_no_file_descriptors(tmp_path: Path) -> None:
    store = Store(tmp_path / "tapvirt")
    store.define(xml(uuid=U1))
    before = sorted(os.listdir("/proc/self/fd"))
    for _ in range(50):
        for bad in (xml(uuid=U2), "<domain", xml().replace("52:54", "01:54")):
            with pytest.raises(TapvirtError):
                store.define(bad)
        with pytest.raises(TapvirtError):
            store.get("missing")
    assert sorted(os.listdir("/proc/self/fd")) == before


# -- the parsed-model cache that lets `tapvirt start` skip lxml and the parser


def test_get_uses_the_cache_without_loading_the_parser(tmp_path: Path) -> None:
    Store(tmp_path).define(xml(uuid=U1))
    code = (
        "import sys; from pathlib import Path; from tapvirt.domains.store import Store\n"
        f"dom = Store(Path({str(tmp_path)!r})).get('guest')\n"
        "print(dom.uuid, dom.devices.interfaces[0].mac,"
        " 'lxml' in sys.modules, 'tapvirt.conf.parse' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.split()
    assert out == [U1, "52:54:00:11:11:11", "False", "False"]


def test_a_hand_edited_definition_is_parsed_again(tmp_path: Path) -> None:
    store = Store(tmp_path)
    store.define(xml(uuid=U1))
    path = store.path("guest")
    path.write_text(path.read_text().replace("52:54:00:11:11:11", "52:54:00:22:22:22"))
    assert store.get("guest").devices.interfaces[0].mac == "52:54:00:22:22:22"
    path.write_text(path.read_text().replace("<interface", "<bogus/><interface", 1))
    with pytest.raises(TapvirtError) as info:
        store.get("guest")
    assert info.value.code.code == "store-corrupt"


def test_a_damaged_cache_is_ignored(tmp_path: Path) -> None:
    store = Store(tmp_path)
    store.define(xml(uuid=U1))
    (store.dir / ".guest.model").write_bytes(b"not a pickle")
    assert store.get("guest").uuid == U1
    assert store.get("guest") == parse_domain(store.get_xml("guest"))


def test_undefine_removes_the_cache(tmp_path: Path) -> None:
    store = Store(tmp_path)
    store.define(xml(uuid=U1))
    store.undefine("guest")
    assert sorted(p.name for p in store.dir.iterdir()) == [".lock"]
