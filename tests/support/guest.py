"""The tiny test guest: Debian's cloud kernel and a busybox-static initramfs.

Built once per (kernel, busybox, iperf3, /init) combination and cached under
/var/cache/tapvirt-guest/<key>/ (world-readable, never committed), so every test, the
demo and the benchmarks share it. Building needs root (apt-get download, mknod);
using a cached build does not.

The guest's /init reads knobs from the kernel command line (dotless names, so the
kernel does not take them for module parameters):

    tvip=10.213.0.2/24   static address of eth0 (required for networking)
    tvgw=10.213.0.1      peer to ping 3x after boot ("none": skip)
    tvmode=server|idle   server: start `iperf3 -s` and print TV-IPERF-SERVER
    tvmtu=65520          optional MTU of eth0
    tvpoweroff=N         power the guest off N seconds after the marker
    tvshell=1            then run a shell on the serial console (ttyS0)
    tvseed=1             read a cloud-init NoCloud seed (a cdrom or disk labelled cidata, on
                         virtio-scsi): set the hostname from it, install its ssh keys, print
                         `TV-SEED instance-id=<id> hostname=<name> keys=<n> key=<last comment>`
    tvwatchdog=N         arm the i6300esb watchdog (no Debian cloud kernel driver: programmed
                         from /init through PCI config space and /dev/mem) to fire after ~2N s
                         without feeding; prints `TV-WATCHDOG-ARMED <pci dev>`
    tvpanic=N            N seconds after the marker, panic the kernel (sysrq c); a <panic>
                         device (pvpanic) tells QEMU

When the guest has a virtio-serial port named org.qemu.guest_agent.0 it starts Debian's
qemu-guest-agent on it before the marker (`TV-AGENT <port>`; not with tvagent=0); the
agent's guest-shutdown prints `TV-AGENT-SHUTDOWN` / `TV-AGENT-REBOOT` and powers off / reboots.

and prints `TV-MARKER up=<uptime> ip=<addr> mac=<mac>`, then `TV-PING-OK ...` or
`TV-PING-FAIL`. An ACPI power-button press (QMP system_powerdown) powers it off.

Then it reports its interfaces on the console (`TV-IFACES eth0 lo ...`) and watches for
hot-plugged ones: a new interface is brought up with an address by a DHCP-less
convention, 10.213.<MAC octet 5>.<MAC octet 6>/24 (MAC 52:54:00:00:01:0b gets
10.213.1.11), and reported as `TV-IF-ADD <name> mac=<mac> ip=<addr>`; one that goes
away as `TV-IF-DEL <name>`. ARP is answered only on the interface that has the address
(arp_ignore=1), so traffic to a hot-plugged NIC's address really goes through it.

    python -m tests.support.guest build [--cache DIR] [--json]
"""

from __future__ import annotations

import contextlib
import fcntl
import gzip
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

CACHE = Path(os.environ.get("TAPVIRT_GUEST_CACHE", "/var/cache/tapvirt-guest"))
BUILDER_VERSION = "5"
KERNEL_META = "linux-image-cloud-amd64"

# Load order from each module's depends= (the extracted tree has no modules.dep).
NET_MODULES = (
    "drivers/virtio/virtio_ring",
    "drivers/virtio/virtio",
    "drivers/virtio/virtio_pci_modern_dev",
    "drivers/virtio/virtio_pci_legacy_dev",
    "drivers/virtio/virtio_pci",
    "net/core/failover",
    "drivers/net/net_failover",
    "drivers/net/virtio_net",
    # the ACPI power button and its input events: lets `tapvirt shutdown` work
    "drivers/acpi/button",
    "drivers/input/evdev",
    # <panic model='isa'> (ACPI QEMU0001) and model='pvpanic' (PCI) report a guest panic
    "drivers/misc/pvpanic/pvpanic",
    "drivers/misc/pvpanic/pvpanic-mmio",
    "drivers/misc/pvpanic/pvpanic-pci",
    # virtio-serial: the guest agent's channel
    "drivers/char/virtio_console",
)
# Loaded only with tvseed=1: a cdrom on virtio-scsi and its ISO 9660 file system (the
# cloud kernel has neither AHCI nor an IDE driver beyond ata_piix, so the seed sits on scsi)
SEED_MODULES = (
    "drivers/scsi/scsi_common",
    "drivers/scsi/scsi_mod",
    "drivers/scsi/virtio_scsi",
    "drivers/cdrom/cdrom",
    "drivers/scsi/sr_mod",
    "drivers/block/virtio_blk",
    "fs/isofs/isofs",
)
AGENT_PACKAGE = "qemu-guest-agent"

INIT = r"""#!/bin/busybox sh
/bin/busybox mkdir -p /proc /sys /dev /tmp /bin /sbin /usr/bin /usr/sbin
/bin/busybox mount -t proc proc /proc
/bin/busybox mount -t sysfs sysfs /sys
/bin/busybox mount -t devtmpfs devtmpfs /dev
/bin/busybox --install -s
exec </dev/console >/dev/console 2>&1
hostname tvguest
export PATH=/bin:/sbin:/usr/bin:/usr/sbin

arg() { for kv in $(cat /proc/cmdline); do case "$kv" in "$1"=*) echo "${kv#*=}";; esac; done; }
TVIP=$(arg tvip); TVGW=$(arg tvgw); TVMODE=$(arg tvmode); TVMTU=$(arg tvmtu)
TVPOWEROFF=$(arg tvpoweroff); TVSHELL=$(arg tvshell); TVSEED=$(arg tvseed)
TVWATCHDOG=$(arg tvwatchdog); TVPANIC=$(arg tvpanic); TVAGENT=$(arg tvagent)

for m in @MODULES@; do
  [ -f /lib/modules/$m.ko ] && insmod /lib/modules/$m.ko 2>/dev/null
done

# a cloud-init NoCloud seed: what cloud-init would read, applied by hand
if [ "$TVSEED" = 1 ]; then
  for m in @SEED_MODULES@; do
    [ -f /lib/modules/$m.ko ] && insmod /lib/modules/$m.ko 2>/dev/null
  done
  i=0; seed=
  while [ -z "$seed" ] && [ $i -lt 50 ]; do
    seed=$(findfs LABEL=cidata 2>/dev/null || findfs LABEL=CIDATA 2>/dev/null)
    [ -z "$seed" ] && { sleep 0.1; i=$((i+1)); }
  done
  mkdir -p /mnt/seed
  if [ -n "$seed" ] && mount -o ro "$seed" /mnt/seed 2>/dev/null; then
    val() { sed -n "s/^$1: *//p" "$2" 2>/dev/null | head -n 1 | tr -d "\"'"; }
    iid=$(val instance-id /mnt/seed/meta-data)
    hn=$(val hostname /mnt/seed/user-data)
    [ -n "$hn" ] || hn=$(val local-hostname /mnt/seed/meta-data)
    [ -n "$hn" ] && hostname "$hn"
    mkdir -p /root/.ssh
    awk '/^ssh_authorized_keys:/ {k=1; next} /^[^ -]/ {k=0}
         k && /^ *- / {sub(/^ *- */, ""); gsub(/["\047]/, ""); print}' \
      /mnt/seed/user-data > /root/.ssh/authorized_keys 2>/dev/null
    chmod 600 /root/.ssh/authorized_keys
    n=$(grep -c . /root/.ssh/authorized_keys)
    last=$(tail -n 1 /root/.ssh/authorized_keys | awk '{print $NF}')
    echo "TV-SEED dev=$seed instance-id=${iid:-none} hostname=$(hostname) keys=$n key=${last:-none}"
  else
    echo "TV-SEED-NONE"
  fi
fi

# the guest agent, on its virtio-serial port (no udev: find the port by its name)
for p in /sys/class/virtio-ports/*; do
  [ "$(cat $p/name 2>/dev/null)" = org.qemu.guest_agent.0 ] && [ "$TVAGENT" != 0 ] || continue
  [ -x /usr/sbin/qemu-ga ] || { echo "TV-AGENT-MISSING"; break; }
  mkdir -p /run /var/run
  qemu-ga -m virtio-serial -p /dev/${p##*/} -t /run -f /run/qemu-ga.pid -l /run/qemu-ga.log -d &&
    echo "TV-AGENT /dev/${p##*/}"
done

# power button -> poweroff (no acpid needed: a blocking read on its event device)
for ev in /sys/class/input/event*; do
  [ -e "$ev/device/name" ] || continue
  case "$(cat $ev/device/name)" in
    *"Power Button"*) (n=/dev/input/${ev##*/}; i=0
                       while [ ! -c $n ] && [ $i -lt 20 ]; do sleep 0.1; i=$((i+1)); done
                       dd if=$n bs=24 count=1 2>/dev/null | grep -q . &&
                       { echo TV-POWERDOWN; poweroff -f; }) & ;;
  esac
done

ip link set lo up
echo 1 > /proc/sys/net/ipv4/conf/all/arp_ignore
echo 2 > /proc/sys/net/ipv4/conf/all/arp_announce
i=0
while [ ! -e /sys/class/net/eth0 ] && [ $i -lt 50 ]; do sleep 0.1; i=$((i+1)); done
if [ -e /sys/class/net/eth0 ]; then
  [ -n "$TVMTU" ] && ip link set eth0 mtu "$TVMTU"
  ip link set eth0 up
  [ -n "$TVIP" ] && ip addr add "$TVIP" dev eth0
  MAC=$(cat /sys/class/net/eth0/address)
else
  MAC=none
fi
echo "TV-MARKER up=$(cut -d' ' -f1 /proc/uptime) ip=${TVIP:-none} mac=$MAC"

if [ -n "$TVPOWEROFF" ]; then (sleep "$TVPOWEROFF"; echo TV-POWEROFF; poweroff -f) & fi

# i6300esb: timer preloads through the unlock sequence in its MMIO BAR (1 tick = 2^15
# PCI clocks of 30 ns ~ 1 ms), then WDT_ENABLE in the lock register (config 0x68)
if [ -n "$TVWATCHDOG" ]; then
  wd=none
  for d in /sys/bus/pci/devices/*; do
    [ "$(cat $d/vendor)" = 0x8086 ] && [ "$(cat $d/device)" = 0x25ab ] || continue
    echo 1 > $d/enable 2>/dev/null
    bar=$(($(head -n 1 $d/resource | cut -d' ' -f1)))
    for off in 0 4; do
      devmem $((bar + 12)) 16 0x80; devmem $((bar + 12)) 16 0x86
      devmem $((bar + off)) 32 $((TVWATCHDOG * 1000))
    done
    printf '\002' | dd of=$d/config bs=1 seek=104 conv=notrunc 2>/dev/null && wd=${d##*/}
  done
  echo "TV-WATCHDOG-ARMED $wd"
fi
if [ -n "$TVPANIC" ]; then (sleep "$TVPANIC"; echo TV-PANIC; echo c > /proc/sysrq-trigger) & fi

if [ -n "$TVGW" ] && [ "$TVGW" != none ]; then
  if out=$(ping -c 3 -W 2 "$TVGW" 2>&1); then
    echo "TV-PING-OK $(echo "$out" | tail -n 1)"
  else
    echo "TV-PING-FAIL"
  fi
fi

if [ "$TVMODE" = server ] && [ -x /usr/bin/iperf3 ]; then
  iperf3 -s -D >/dev/null 2>&1
  i=0
  while ! netstat -ltn 2>/dev/null | grep -q ':5201 ' && [ $i -lt 100 ]; do
    sleep 0.1; i=$((i+1)); done
  echo TV-IPERF-SERVER
fi
# tvshell=1: a shell on the serial console (what `tapvirt console` attaches to)
if [ "$TVSHELL" = 1 ]; then (while :; do sh; done) </dev/console >/dev/console 2>&1 & fi
known=" $(ls /sys/class/net | tr '\n' ' ') "
echo "TV-IFACES$known"
while :; do
  now=" $(ls /sys/class/net | tr '\n' ' ') "
  for i in $now; do
    case "$known" in *" $i "*) continue;; esac
    mac=$(cat /sys/class/net/$i/address 2>/dev/null) || continue
    set -- $(echo "$mac" | tr ':' ' ')
    addr="10.213.$((0x$5)).$((0x$6))"
    ip link set "$i" up; ip addr add "$addr/24" dev "$i"
    echo "TV-IF-ADD $i mac=$mac ip=$addr"
  done
  for i in $known; do
    case "$now" in *" $i "*) ;; *) echo "TV-IF-DEL $i";; esac
  done
  known="$now"
  sleep 0.3
done
"""


@dataclass(frozen=True)
class GuestImage:
    """A built guest: what to put in <kernel>/<initrd>."""

    kernel: Path
    initrd: Path
    kernel_version: str
    key: str

    def cmdline(
        self,
        *,
        ip: str | None = None,
        peer: str | None = None,
        mode: str = "idle",
        mtu: int | None = None,
        poweroff_after: float | None = None,
        console_shell: bool = False,
        seed: bool = False,
        watchdog: int | None = None,
        panic_after: float | None = None,
        agent: bool = True,
    ) -> str:
        parts = ["console=ttyS0", "quiet", "panic=-1", f"tvmode={mode}"]
        if ip:
            parts.append(f"tvip={ip}")
        parts.append(f"tvgw={peer or 'none'}")
        if mtu:
            parts.append(f"tvmtu={mtu}")
        if poweroff_after is not None:
            parts.append(f"tvpoweroff={poweroff_after:g}")
        if console_shell:
            parts.append("tvshell=1")
        if seed:
            parts.append("tvseed=1")
        if watchdog is not None:
            parts.append(f"tvwatchdog={watchdog}")
        if panic_after is not None:
            parts.append(f"tvpanic={panic_after:g}")
        if not agent:
            parts.append("tvagent=0")
        return " ".join(parts)


def _run(argv: list[str], cwd: Path | None = None) -> str:
    proc = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed: {proc.stderr.strip()}")
    return proc.stdout


def kernel_package() -> str:
    """The ABI-named kernel package the cloud meta package depends on right now."""
    for raw in _run(["apt-cache", "depends", KERNEL_META]).splitlines():
        line = raw.strip()
        if line.startswith("Depends:") and "linux-image-" in line:
            return line.split()[-1]
    raise RuntimeError(f"cannot resolve the kernel package behind {KERNEL_META}")


def _version(package: str) -> str:
    out = _run(["apt-cache", "policy", package])
    for raw in out.splitlines():
        line = raw.strip()
        if line.startswith("Candidate:"):
            return line.split()[1]
    return "unknown"


def _installed(package: str) -> str:
    return _run(["dpkg-query", "-W", "-f", "${Version}", package]).strip()


def _key(kpkg: str, with_iperf: bool) -> str:
    h = hashlib.sha256()
    for part in (BUILDER_VERSION, kpkg, _version(kpkg), _installed("busybox-static"),
                 _installed("iperf3") if with_iperf else "-", _version(AGENT_PACKAGE), INIT,
                 " ".join(NET_MODULES), " ".join(SEED_MODULES)):
        h.update(part.encode() + b"\0")
    return f"{kpkg.removeprefix('linux-image-')}-{h.hexdigest()[:12]}"


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _load(directory: Path) -> GuestImage | None:
    info = directory / "info.json"
    if not info.is_file():
        return None
    data = json.loads(info.read_text())
    return GuestImage(directory / "vmlinuz", directory / "initramfs.cpio.gz",
                      data["kernel_version"], data["key"])


def cached(cache: Path = CACHE) -> GuestImage | None:
    """The newest complete build in the cache, without building (works unprivileged)."""
    if not cache.is_dir():
        return None
    builds = [d for d in cache.iterdir() if (d / "info.json").is_file()]
    builds.sort(key=lambda d: (d / "info.json").stat().st_mtime, reverse=True)
    return _load(builds[0]) if builds else None


def _ldd_libs(binary: str) -> list[str]:
    libs = []
    for line in _run(["ldd", binary]).splitlines():
        parts = line.split()
        for p in parts:
            if p.startswith("/"):
                libs.append(p)
                break
    return libs


def _copy_modules(stage: Path, kroot: Path, kver: str, rels: tuple[str, ...]) -> list[str]:
    names = []
    for rel in rels:
        src = kroot / "lib/modules" / kver / "kernel" / f"{rel}.ko"
        name = rel.rsplit("/", 1)[1]
        names.append(name)
        if src.exists():
            shutil.copy2(src, stage / "lib/modules" / f"{name}.ko")
        elif src.with_suffix(".ko.xz").exists():  # newer kernels: busybox insmod can't read xz
            _run(["sh", "-c", f"xz -dc '{src}.xz' > '{stage}/lib/modules/{name}.ko'"])
        else:
            raise RuntimeError(f"kernel module {rel}.ko missing from {kroot}")
    return names


def _copy_binary(stage: Path, binary: str, dest: str) -> None:
    """`binary` at `dest` in the guest, with every library ldd lists at its own path."""
    for src, to in [(binary, dest), *((lib, lib) for lib in _ldd_libs(binary))]:
        target = stage / to.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(os.path.realpath(src), target)


def _agent_binary(work: Path) -> str:
    """Debian's qemu-ga: the host's if installed, else extracted from its package
    (apt-get download, no installation)."""
    if os.path.exists("/usr/bin/qemu-ga"):
        return "/usr/bin/qemu-ga"
    _run(["apt-get", "-q", "download", AGENT_PACKAGE], cwd=work)
    deb = next(work.glob(f"{AGENT_PACKAGE}_*.deb"))
    _run(["dpkg-deb", "-x", str(deb), str(work / "qga")])
    for rel in ("usr/sbin/qemu-ga", "usr/bin/qemu-ga"):
        if (work / "qga" / rel).exists():
            return str(work / "qga" / rel)
    raise RuntimeError(f"no qemu-ga in {deb.name}")


# guest-shutdown execs /sbin/shutdown -h -P|-H|-r +0 MSG with stdout on /dev/null
SHUTDOWN = """#!/bin/sh
case " $* " in
  *" -r "*) echo TV-AGENT-REBOOT > /dev/console; reboot -f;;
  *) echo TV-AGENT-SHUTDOWN > /dev/console; poweroff -f;;
esac
"""
OS_RELEASE = ('NAME="tapvirt test guest"\nID=tapvirt-test\nVERSION_ID=1\n'
              'PRETTY_NAME="tapvirt test guest (busybox)"\n')


def _stage(stage: Path, kroot: Path, kver: str, with_iperf: bool, work: Path) -> None:
    for d in ("bin", "dev", "etc", "lib/modules", "proc", "sys", "tmp", "sbin", "usr/sbin",
              "run", "mnt"):
        (stage / d).mkdir(parents=True, exist_ok=True)
    shutil.copy2("/bin/busybox", stage / "bin/busybox")
    names = _copy_modules(stage, kroot, kver, NET_MODULES)
    seed = _copy_modules(stage, kroot, kver, SEED_MODULES)
    init = stage / "init"
    init.write_text(INIT.replace("@MODULES@", " ".join(names))
                    .replace("@SEED_MODULES@", " ".join(seed)))
    init.chmod(0o755)
    (stage / "etc/passwd").write_text("root:x:0:0:root:/root:/bin/sh\n")
    (stage / "etc/group").write_text("root:x:0:\n")
    (stage / "etc/os-release").write_text(OS_RELEASE)
    (stage / "etc/hostname").write_text("tvguest\n")
    sd = stage / "sbin/shutdown"
    sd.write_text(SHUTDOWN)
    sd.chmod(0o755)
    os.mknod(stage / "dev/console", 0o600 | 0o020000, os.makedev(5, 1))
    if with_iperf:
        _copy_binary(stage, "/usr/bin/iperf3", "/usr/bin/iperf3")
    _copy_binary(stage, _agent_binary(work), "/usr/sbin/qemu-ga")


def _pack(stage: Path, out: Path) -> None:
    files = subprocess.run(["find", ".", "-print0"], cwd=stage, capture_output=True,
                           check=True).stdout
    names = b"\0".join(sorted(n for n in files.split(b"\0") if n))
    cpio = subprocess.run(
        ["busybox", "cpio", "-o", "-H", "newc", "-R", "0:0", "-0",
         "--ignore-devno", "--renumber-inodes"],
        cwd=stage, input=names + b"\0", capture_output=True, check=True).stdout
    with gzip.open(out, "wb", compresslevel=6) as f:
        f.write(cpio)


def build(cache: Path = CACHE, *, with_iperf: bool = True, log: bool = False) -> GuestImage:
    """Build the guest (or reuse the cached build with the same key). Needs root to build."""
    kpkg = kernel_package()
    key = _key(kpkg, with_iperf)
    target = cache / key
    found = _load(target)
    if found is not None:
        return found
    if os.geteuid() != 0:
        raise PermissionError(f"no cached guest in {target}; build it once as root: "
                              "python -m tests.support.guest build")
    cache.mkdir(parents=True, exist_ok=True)
    cache.chmod(0o755)
    with _locked(cache / ".lock"):
        found = _load(target)  # another builder finished while we waited
        if found is not None:
            return found
        work = Path(tempfile.mkdtemp(prefix=".build-", dir=cache))
        try:
            if log:
                print(f"   downloading {kpkg}", file=sys.stderr)
            _run(["apt-get", "-q", "download", kpkg], cwd=work)
            deb = next(work.glob("*.deb"))
            _run(["dpkg-deb", "-x", str(deb), str(work / "k")])
            kver = kpkg.removeprefix("linux-image-")
            out = work / "out"
            out.mkdir()
            shutil.copy2(work / "k/boot" / f"vmlinuz-{kver}", out / "vmlinuz")
            if log:
                print("   building the busybox initramfs", file=sys.stderr)
            _stage(work / "stage", work / "k", kver, with_iperf, work)
            _pack(work / "stage", out / "initramfs.cpio.gz")
            (out / "info.json").write_text(json.dumps(
                {"key": key, "kernel_version": kver, "kernel_package": kpkg,
                 "iperf3": with_iperf}, indent=1) + "\n")
            for p in out.iterdir():
                p.chmod(0o644)
            out.chmod(0o755)
            os.rename(out, target)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    image = _load(target)
    assert image is not None
    return image


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m tests.support.guest")
    sub = parser.add_subparsers(dest="verb", required=True)
    b = sub.add_parser("build", help="build (or find in the cache) the test guest")
    b.add_argument("dir", nargs="?", type=Path, default=CACHE, help=f"cache dir ({CACHE})")
    b.add_argument("--no-iperf", action="store_true", help="leave iperf3 out (1 MiB smaller)")
    b.add_argument("--json", action="store_true")
    ns = parser.parse_args(argv)
    image = build(ns.dir, with_iperf=not ns.no_iperf, log=not ns.json)
    if ns.json:
        print(json.dumps({"kernel": str(image.kernel), "initrd": str(image.initrd),
                          "kernel_version": image.kernel_version, "key": image.key}))
    else:
        print(f"kernel {image.kernel}\ninitrd {image.initrd}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
