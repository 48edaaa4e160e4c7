"""Domain XML written by Debian's `virt-install --print-xml`, for the coverage measurement.

    python -m tests.corpus.virtinstall [--out DIR] [--list]

runs `virt-install --connect qemu:///session --print-xml` for every configuration in
CONFIGS as an unprivileged user (as root: uid 65534 with a private home; otherwise the
caller) and writes DIR/NAME.xml (default /var/cache/tapvirt-corpus/virt-install). Nothing
here is committed: the outputs are third-party documents, regenerated on demand. As root it
installs what it needs (virtinst, ovmf for --boot uefi) with apt-get.

virt-install names no precreated device `managed='no'` (it has no option for it); for the
`--network type=ethernet,target.dev=X` configurations a second document NAME-unmanaged.xml
adds `managed='no'` to that `<target>`, which is how tapvirt's users write it.

libvirt's session daemon starts on demand; the one this run started is ended by its pid
(from its pid file, after checking it is that user's libvirtd).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

DEFAULT_OUT = Path("/var/cache/tapvirt-corpus/virt-install")
NOBODY = 65534
PACKAGES = ("virtinst", "ovmf", "qemu-utils")


@dataclass(frozen=True)
class Config:
    name: str
    args: tuple[str, ...]
    images: tuple[str, ...] = ("disk",)  # qcow2 images to precreate: NAME-<image>.qcow2

    def disk(self, images: Path, image: str = "disk") -> str:
        return str(images / f"{self.name}-{image}.qcow2")


def _c(name: str, *args: str, images: tuple[str, ...] = ("disk",)) -> Config:
    return Config(name, args, images)


# {disk} / {disk2} / {iso} / {kernel} are replaced by per-configuration paths.
CONFIGS: tuple[Config, ...] = (
    # cloud images: --import of a qcow2, cloud-init seed on a cdrom
    _c("cloud-debian11-cloudinit", "--osinfo", "debian11", "--import", "--disk", "{disk}",
       "--cloud-init", "disable=on,root-password-generate=on",
       "--network", "type=ethernet,target.dev=tvtap0", "--graphics", "none"),
    _c("cloud-ubuntu2204-cloudinit", "--osinfo", "ubuntu22.04", "--import", "--disk", "{disk}",
       "--cloud-init", "root-password-generate=on",
       "--network", "user", "--graphics", "none"),
    # machine types
    _c("pc-debian11-ethernet", "--osinfo", "debian11", "--machine", "pc", "--import",
       "--disk", "{disk}", "--network", "type=ethernet,target.dev=tvtap0",
       "--graphics", "none"),
    _c("q35-debian11-ethernet", "--osinfo", "debian11", "--machine", "q35", "--import",
       "--disk", "{disk}", "--network", "type=ethernet,target.dev=tvtap0,model=virtio",
       "--graphics", "none"),
    _c("q35-generic-ethernet-e1000e", "--osinfo", "generic", "--import", "--disk", "{disk}",
       "--network", "type=ethernet,target.dev=tvtap1,model=e1000e", "--graphics", "none"),
    # UEFI
    _c("uefi-fedora37", "--osinfo", "fedora37", "--boot", "uefi", "--import",
       "--disk", "{disk}", "--network", "type=ethernet,target.dev=tvtap0",
       "--graphics", "none"),
    _c("uefi-debian11-vnc", "--osinfo", "debian11", "--boot", "uefi", "--import",
       "--disk", "{disk}", "--network", "user", "--graphics", "vnc"),
    # graphics
    _c("vnc-ubuntu2204", "--osinfo", "ubuntu22.04", "--import", "--disk", "{disk}",
       "--network", "type=ethernet,target.dev=tvtap0", "--graphics", "vnc,listen=127.0.0.1"),
    _c("spice-fedora37-desktop", "--osinfo", "fedora37", "--import", "--disk", "{disk}",
       "--network", "user", "--graphics", "spice"),
    _c("spice-unix-socket", "--osinfo", "debian11", "--import", "--disk", "{disk}",
       "--network", "user", "--graphics", "spice,listen=none", "--video", "virtio"),
    # desktop presets: sound, USB redirection, TPM
    _c("desktop-ubuntu2204-sound-usbredir-tpm", "--osinfo", "ubuntu22.04", "--import",
       "--disk", "{disk}", "--network", "user", "--graphics", "spice",
       "--sound", "ich9", "--redirdev", "usb,type=spicevmc", "--tpm", "emulator"),
    _c("desktop-fedora37-vnc-sound", "--osinfo", "fedora37", "--import", "--disk", "{disk}",
       "--network", "type=ethernet,target.dev=tvtap0", "--graphics", "vnc",
       "--sound", "default", "--video", "qxl", "--input", "tablet"),
    # Windows presets
    _c("win11", "--osinfo", "win11", "--import", "--disk", "{disk}",
       "--network", "type=ethernet,target.dev=tvtap0", "--graphics", "vnc"),
    _c("win10", "--osinfo", "win10", "--import", "--disk", "{disk}",
       "--network", "user", "--graphics", "spice"),
    _c("win2k22-server", "--osinfo", "win2k22", "--import", "--disk", "{disk}",
       "--network", "type=ethernet,target.dev=tvtap0,model=e1000e", "--graphics", "vnc"),
    # network types
    _c("net-bridge", "--osinfo", "debian11", "--import", "--disk", "{disk}",
       "--network", "bridge=br0", "--graphics", "none"),
    _c("net-user", "--osinfo", "debian11", "--import", "--disk", "{disk}",
       "--network", "user,model=virtio", "--graphics", "none"),
    _c("net-direct", "--osinfo", "debian11", "--import", "--disk", "{disk}",
       "--network", "type=direct,source=eth0,source.mode=bridge", "--graphics", "none"),
    _c("net-two-nics-none-graphics", "--osinfo", "almalinux9", "--import", "--disk", "{disk}",
       "--network", "type=ethernet,target.dev=tvtap0",
       "--network", "type=ethernet,target.dev=tvtap1,model=e1000",
       "--graphics", "none"),
    _c("net-none", "--osinfo", "generic", "--import", "--disk", "{disk}",
       "--network", "none", "--graphics", "none"),
    # other distributions
    _c("rhel9", "--osinfo", "rhel9.0", "--import", "--disk", "{disk}",
       "--network", "type=ethernet,target.dev=tvtap0", "--graphics", "none"),
    _c("opensuse154", "--osinfo", "opensuse15.4", "--import", "--disk", "{disk}",
       "--network", "user", "--graphics", "vnc"),
    _c("alpine317", "--osinfo", "alpinelinux3.17", "--import", "--disk", "{disk}",
       "--network", "type=ethernet,target.dev=tvtap0", "--graphics", "none"),
    _c("freebsd131", "--osinfo", "freebsd13.1", "--import", "--disk", "{disk}",
       "--network", "user", "--graphics", "none"),
    _c("archlinux", "--osinfo", "archlinux", "--import", "--disk", "{disk}",
       "--network", "type=ethernet,target.dev=tvtap0", "--graphics", "none"),
    # installs from media, CPU and topology, buses, direct kernel boot
    _c("install-cdrom-debian11", "--osinfo", "debian11", "--disk", "{disk}",
       "--disk", "{iso},device=cdrom", "--boot", "cdrom,hd,menu=on",
       "--network", "type=ethernet,target.dev=tvtap0", "--graphics", "vnc",
       images=("disk", "iso")),
    _c("cpu-host-passthrough-topology", "--osinfo", "debian11", "--import", "--disk", "{disk}",
       "--cpu", "host-passthrough", "--vcpus", "4,sockets=1,cores=2,threads=2",
       "--network", "type=ethernet,target.dev=tvtap0", "--graphics", "none"),
    _c("cpu-model-features", "--osinfo", "debian11", "--import", "--disk", "{disk}",
       "--cpu", "Skylake-Client,+x2apic,-vmx", "--vcpus", "2",
       "--network", "type=ethernet,target.dev=tvtap0", "--graphics", "none"),
    _c("disks-sata-scsi", "--osinfo", "debian11", "--import",
       "--disk", "{disk},bus=sata", "--disk", "{disk2},bus=scsi",
       "--controller", "scsi,model=virtio-scsi",
       "--network", "type=ethernet,target.dev=tvtap0", "--graphics", "none",
       images=("disk", "disk2")),
    _c("direct-kernel-boot", "--osinfo", "debian11", "--import", "--disk", "{disk}",
       "--boot", "kernel={kernel},initrd={initrd},kernel_args=console=ttyS0",
       "--network", "type=ethernet,target.dev=tvtap0", "--graphics", "none",
       "--serial", "pty", "--memballoon", "none", "--rng", "none"),
    _c("pc-i440fx-ide-legacy", "--osinfo", "win7", "--machine", "pc", "--import",
       "--disk", "{disk}", "--network", "type=ethernet,target.dev=tvtap0,model=rtl8139",
       "--graphics", "vnc"),
)


def ethernet_unmanaged(xml: str) -> str | None:
    """The same document with managed='no' on each ethernet <target dev=...>, or None."""
    from lxml import etree

    root = etree.fromstring(xml.encode())
    changed = False
    for target in root.iterfind("devices/interface[@type='ethernet']/target[@dev]"):
        target.set("managed", "no")
        changed = True
    if not changed:
        return None
    return etree.tostring(root, encoding="unicode") + "\n"


@dataclass
class Runner:
    """Runs commands as the unprivileged user the session daemon belongs to."""

    uid: int
    gid: int
    home: Path

    @property
    def runtime(self) -> Path:
        return self.home / "run"

    def env(self) -> dict[str, str]:
        return {
            "HOME": str(self.home),
            "XDG_RUNTIME_DIR": str(self.runtime),
            "XDG_CONFIG_HOME": str(self.home / "config"),
            "XDG_CACHE_HOME": str(self.home / "cache"),
            "XDG_DATA_HOME": str(self.home / "data"),
            "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
            "LANG": "C.UTF-8",
        }

    def argv(self, argv: Sequence[str]) -> list[str]:
        env = [f"{k}={v}" for k, v in self.env().items()]
        if os.geteuid() != self.uid:
            return ["setpriv", f"--reuid={self.uid}", f"--regid={self.gid}", "--clear-groups",
                    "--inh-caps=-all", "env", "-i", *env, *argv]
        return ["env", "-i", *env, *argv]

    def run(self, argv: Sequence[str]) -> subprocess.CompletedProcess[str]:
        return subprocess.run(self.argv(argv), capture_output=True, text=True, timeout=300,
                              check=False, cwd=self.home)

    def end_session_daemon(self) -> None:
        """End the libvirtd this run started, by its pid, if it is that user's libvirtd."""
        pidfile = self.runtime / "libvirt" / "libvirtd.pid"
        try:
            pid = int(pidfile.read_text().strip())
            proc = Path(f"/proc/{pid}")
            if proc.stat().st_uid != self.uid or b"libvirtd" not in (proc / "cmdline").read_bytes():
                return
        except (OSError, ValueError):
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 10
        while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        if Path(f"/proc/{pid}").exists():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


@contextlib.contextmanager
def session_user() -> Iterator[Runner]:
    home = Path(tempfile.mkdtemp(prefix="tv-virtinstall-"))
    uid, gid = (NOBODY, NOBODY) if os.geteuid() == 0 else (os.getuid(), os.getgid())
    for sub in ("", "run", "config", "cache", "data"):
        (home / sub).mkdir(mode=0o700, exist_ok=True)
        os.chown(home / sub, uid, gid)
    runner = Runner(uid, gid, home)
    try:
        yield runner
    finally:
        runner.end_session_daemon()
        shutil.rmtree(home, ignore_errors=True)


def install_packages() -> None:
    missing = [p for p in PACKAGES if subprocess.run(
        ["dpkg-query", "-W", "-f=${Status}", p], capture_output=True, text=True,
        check=False).stdout.strip() != "install ok installed"]
    if not missing:
        return
    if os.geteuid() != 0:
        sys.exit(f"needs the Debian packages {' '.join(missing)} (run as root to install)")
    apt = ["apt-get", "-o", "DPkg::Lock::Timeout=600", "-q", "-y"]
    subprocess.run([*apt, "install", "--no-install-recommends", *missing], check=True,
                   stdout=subprocess.DEVNULL, env={**os.environ,
                                                   "DEBIAN_FRONTEND": "noninteractive"})


def _substitute(cfg: Config, images: Path) -> list[str]:
    paths = {
        "disk": cfg.disk(images),
        "disk2": cfg.disk(images, "disk2"),
        "iso": str(images / f"{cfg.name}-iso.qcow2"),
        "kernel": str(images / "vmlinuz"),
        "initrd": str(images / "initrd.img"),
    }
    return [a.format(**paths) for a in cfg.args]


def _phases(name: str, stdout: str, home: Path, images: Path) -> list[tuple[str, str]]:
    """--print-xml of a cloud-init run prints one document per boot phase: the first boot
    (with the generated seed ISO on a cdrom) and the domain as it stays defined. Both are
    kept. virt-install deletes the seed ISO (in the session user's cache) when it exits, so
    the first-boot document is pointed at an empty placeholder beside the disk images."""
    starts = [i for i in range(len(stdout)) if stdout.startswith("<domain", i)]
    docs = [stdout[a:b].strip() + "\n" for a, b in zip(starts, [*starts[1:], len(stdout)],
                                                          strict=True)]
    if len(docs) == 1:
        return [(name, docs[0])]
    first = docs[0]
    for token in first.split('"'):
        if token.startswith(str(home)):
            placeholder = images / f"{name}-{Path(token).name.rsplit('-', 1)[-1]}"
            placeholder.touch()
            first = first.replace(token, str(placeholder))
    return [(f"{name}-firstboot", first), (name, docs[-1])]


def generate(out: Path, configs: Sequence[Config] = CONFIGS) -> list[str]:
    """Writes out/NAME.xml for each configuration; returns the failures' messages."""
    install_packages()
    out.mkdir(parents=True, exist_ok=True)
    images = out / "images"
    failures: list[str] = []
    with session_user() as user:
        images.mkdir(exist_ok=True)
        os.chown(images, user.uid, user.gid)
        for placeholder in ("vmlinuz", "initrd.img"):
            (images / placeholder).touch()
        for cfg in configs:
            for image in cfg.images:
                path = cfg.disk(images, image)
                if not Path(path).exists():
                    made = user.run(["qemu-img", "create", "-q", "-f", "qcow2", path, "1G"])
                    if made.returncode != 0:
                        failures.append(f"{cfg.name}: qemu-img: {made.stderr.strip()}")
            argv = ["virt-install", "--connect", "qemu:///session", "--print-xml",
                    "--name", cfg.name, "--memory", "1024", *_substitute(cfg, images)]
            proc = user.run(argv)
            if proc.returncode != 0 or "<domain" not in proc.stdout:
                failures.append(f"{cfg.name}: {proc.stderr.strip() or proc.stdout.strip()}")
                continue
            for name, text in _phases(cfg.name, proc.stdout, user.home, images):
                (out / f"{name}.xml").write_text(text)
                unmanaged = ethernet_unmanaged(text)
                if unmanaged is not None:
                    (out / f"{name}-unmanaged.xml").write_text(unmanaged)
    for written in {out, images, *out.iterdir(), *images.iterdir()}:
        if os.geteuid() == 0:
            os.chown(written, 0, 0)
        written.chmod(0o755 if written.is_dir() else 0o644)
    return failures


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tests.corpus.virtinstall",
                                 description=__doc__.split("\n\n")[0] if __doc__ else None)
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT, metavar="DIR")
    ap.add_argument("--list", action="store_true", help="print the configurations and exit")
    args = ap.parse_args(argv)
    if args.list:
        for cfg in CONFIGS:
            print(cfg.name, " ".join(cfg.args))
        return 0
    failures = generate(args.out)
    written = len(list(args.out.glob("*.xml")))
    print(f"{written} documents in {args.out}")
    for f in failures:
        print(f"FAILED {f}", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
