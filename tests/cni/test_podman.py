"""A real libcni runtime: podman 4 with its CNI backend runs the shipped Pod manifest
(deploy/kubernetes/pod.yaml) with `podman kube play`; tapvirt-cni makes the tap in the
pod, the launcher container (uid 107, no capabilities) boots the guest with `tapvirt
run`, the guest pings; `podman pod stop` powers the guest off through SIGTERM and
`podman kube down` runs DEL, which leaves no device and no record.

Safety (shared/reference cni.md §5.3): podman itself runs inside a throwaway `tv-`
namespace (nsenter), with its own storage, runroot and a network_config_dir that holds
only the test network, which is also its default network: its bridge plugin, iptables
rules and sysctls can never reach the root namespace. The manifest is changed only where
a cluster differs from this machine: hostPaths point at the test's files (guest kernel,
a private tun node), the image is a local rootfs with the host's /usr mounted read-only,
and the guest's command line gets the test guest's knobs.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.cni.conftest import is_id
from tests.support import guest
from tests.support.sandbox import REPO, SRC, Netns, run

pytestmark = pytest.mark.e2e
yaml = pytest.importorskip("yaml")

NET = "tvpod"
GUEST_IP, PEER_IP = "10.213.9.2/24", "10.213.9.1"


def _podman_ok() -> str | None:
    if shutil.which("podman") is None or shutil.which("runc") is None:
        return "needs podman 4 and runc (scripts/install-deps)"
    out = run(["podman", "--version"], check=False).stdout
    if not out.startswith("podman version 4."):
        return f"needs podman 4 (its CNI backend; podman 5 removed it): {out.strip()}"
    if not os.path.exists("/usr/libexec/podman/catatonit"):
        return "needs catatonit (podman's local pause image)"
    if guest.cached() is None:
        return "needs the cached test guest (python -m tests.support.guest build)"
    return None


@dataclass
class Podman:
    work: Path
    host: Netns

    def argv(self, *args: str) -> list[str]:
        return ["nsenter", f"--net=/run/netns/{self.host.name}", "env",
                f"CONTAINERS_CONF={self.work / 'containers.conf'}", "podman",
                "--root", str(self.work / "storage"), "--runroot", str(self.work / "run"),
                "--tmpdir", str(self.work / "tmp"), "--storage-driver", "vfs", *args]

    def __call__(self, *args: str, check: bool = True,
                 timeout: float = 180) -> subprocess.CompletedProcess[str]:
        return run(self.argv(*args), check=check, timeout=timeout)


@pytest.fixture
def podman(scratch: Path) -> Iterator[Podman]:
    reason = _podman_ok()
    if reason:
        pytest.skip(reason)
    work = scratch / "podman"
    for d in ("net.d", "bin", "storage", "run", "tmp", "state", "nodes"):
        (work / d).mkdir(parents=True)
    (work / "containers.conf").write_text(f"""[network]
network_backend = "cni"
network_config_dir = "{work}/net.d"
cni_plugin_dirs = ["{work}/bin", "/usr/lib/cni"]
default_network = "{NET}"
[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
events_logfile_path = "{work}/events.log"
[containers]
default_ulimits = ["nofile=20000:20000", "nproc=1000:1000"]
""")
    host = Netns.create("tv-pmh")
    p = Podman(work, host)
    try:
        yield p
    finally:
        p("pod", "rm", "-a", "-f", "-t", "5", check=False)
        p("rm", "-a", "-f", check=False)
        p("system", "reset", "-f", check=False)
        host.close()


def _install_plugin(p: Podman) -> Path:
    """The plugin in the runtime's CNI path, behind a shim that records each call."""
    calls = p.work / "calls.log"
    shim = p.work / "bin" / "tapvirt-cni"
    shim.write_text(f"""#!/bin/sh
echo "$CNI_COMMAND $CNI_IFNAME $CNI_NETNS" >> {calls}
PYTHONPATH={SRC} exec {sys.executable} -m tapvirt.cni.main
""")
    shim.chmod(0o755)
    return calls


def _network(p: Podman) -> None:
    """The shipped NetworkAttachmentDefinition's CNI configuration as podman's network."""
    docs = list(yaml.safe_load_all((REPO / "deploy/kubernetes/"
                                    "network-attachment-definition.yaml").read_text()))
    nad = next(d for d in docs if d["metadata"]["name"] == "tapvirt-tap")
    conflist = json.loads(nad["spec"]["config"])
    conflist["name"] = NET
    for plugin in conflist["plugins"]:
        plugin.update(stateDir=str(p.work / "state"), nodeDir=str(p.work / "nodes"))
    (p.work / "net.d" / f"{NET}.conflist").write_text(json.dumps(conflist))


def _image(p: Podman) -> None:
    """localhost/tapvirt-launcher without a registry: a rootfs whose /usr is the host's
    (mounted read-only by the pod), tapvirt's source, uid 107; `podman import`ed."""
    root = p.work / "rootfs"
    for d in ("usr", "etc", "tmp", "var/lib/tapvirt", "opt", "dev", "proc", "sys", "run"):
        (root / d).mkdir(parents=True, exist_ok=True)
    for d in ("bin", "lib", "lib64", "sbin"):
        (root / d).symlink_to(f"usr/{d}")
    (root / "tmp").chmod(0o1777)
    os.chown(root / "var/lib/tapvirt", 107, 107)
    (root / "etc/passwd").write_text("root:x:0:0:root:/root:/bin/sh\n"
                                     "qemu:x:107:107:qemu:/var/lib/tapvirt:/usr/sbin/nologin\n")
    (root / "etc/group").write_text("root:x:0:\nqemu:x:107:\n")
    shutil.copytree(SRC / "tapvirt", root / "opt/tapvirt",
                    ignore=shutil.ignore_patterns("__pycache__"))
    entry = root / "tapvirt-run"
    entry.write_text('#!/bin/sh\nPYTHONPATH=/opt exec /usr/bin/python3 -m tapvirt.cli.main '
                     'run "$@"\n')
    entry.chmod(0o755)
    tar = p.work / "rootfs.tar"
    run(["tar", "-C", str(root), "-cf", str(tar), "."])
    p("import", "--change", 'ENTRYPOINT ["/tapvirt-run"]', "--change", "USER 107:107",
      "--change", "ENV HOME=/var/lib/tapvirt",
      "--change", "ENV TAPVIRT_RUNTIME_DIR=/var/lib/tapvirt/run",
      str(tar), "localhost/tapvirt-launcher:latest")


def _manifest(p: Podman) -> Path:
    image = guest.cached()
    assert image is not None
    images = p.work / "images"
    images.mkdir()
    shutil.copy(image.kernel, images / "vmlinuz")
    shutil.copy(image.initrd, images / "initramfs.cpio.gz")
    for f in images.iterdir():
        f.chmod(0o644)
    tun = p.work / "tun"
    os.mknod(tun, 0o666 | 0o020000, os.makedev(10, 200))
    tun.chmod(0o666)
    cm, pod = yaml.safe_load_all((REPO / "deploy/kubernetes/pod.yaml").read_text())
    xml = cm["data"]["domain.xml"]
    assert "<cmdline>console=ttyS0</cmdline>" in xml
    cm["data"]["domain.xml"] = xml.replace(
        "<cmdline>console=ttyS0</cmdline>",
        f"<cmdline>{image.cmdline(ip=GUEST_IP, peer=PEER_IP)}</cmdline>")
    vols = {v["name"]: v for v in pod["spec"]["volumes"]}
    vols["images"]["hostPath"]["path"] = str(images)
    vols["tun"]["hostPath"]["path"] = str(tun)
    pod["spec"]["volumes"].append({"name": "usr", "hostPath": {"path": "/usr",
                                                              "type": "Directory"}})
    pod["spec"]["containers"][0]["volumeMounts"].append(
        {"name": "usr", "mountPath": "/usr", "readOnly": True})
    out = p.work / "pod.yaml"
    out.write_text(yaml.safe_dump_all([cm, pod]))
    return out


def _pod_netns_with(dev: str, stop: threading.Event) -> str | None:
    """The namespace podman made for the pod, found by the device the plugin put there."""
    while not stop.is_set():
        for name in os.listdir("/run/netns"):
            if name.startswith("netns-") and run(["ip", "-n", name, "link", "show", dev],
                                                 check=False).returncode == 0:
                return name
        time.sleep(0.05)
    return None


def _logs(p: Podman) -> str:
    proc = p("logs", "tapvirt-vm-launcher", check=False)
    return proc.stdout + proc.stderr


def test_podman_kube_play_runs_the_shipped_pod_and_kube_down_deletes_the_tap(
    podman: Podman,
) -> None:
    p = podman
    calls = _install_plugin(p)
    _network(p)
    _image(p)
    manifest = _manifest(p)

    # The guest pings the pod side of its tap: give that an address as soon as the
    # plugin has made the tap (before the guest has booted, which takes seconds).
    found: dict[str, Any] = {}
    stop = threading.Event()

    def address() -> None:
        ns = _pod_netns_with("tap0", stop)
        if ns:
            run(["ip", "-n", ns, "addr", "add", f"{PEER_IP}/24", "dev", "tap0"])
            found["netns"] = ns
            found["link"] = json.loads(run(["ip", "-n", ns, "-d", "-j", "link", "show",
                                            "tap0"]).stdout)[0]

    watcher = threading.Thread(target=address, daemon=True)
    watcher.start()
    try:
        p("kube", "play", "--network", f"{NET}:interface_name=tap0", str(manifest))
        watcher.join(timeout=60)
    finally:
        stop.set()
    assert "netns" in found, calls.read_text() if calls.exists() else "no plugin call"
    info = found["link"]["linkinfo"]["info_data"]
    assert info["type"] == "tap" and is_id(info["user"], 107)
    assert "tapvirt-prep:v1" in found["link"].get("ifalias", "")

    deadline = time.monotonic() + 180
    while "TV-PING-OK" not in (logs := _logs(p)) and time.monotonic() < deadline:
        assert "TV-PING-FAIL" not in logs, logs[-3000:]
        time.sleep(1)
    assert "TV-PING-OK" in logs, logs[-3000:]
    # the launcher really ran as 107 without capabilities (what the container saw)
    top = p("top", "tapvirt-vm-launcher", "user", "capeff", "args").stdout
    rows = [line.split(None, 2) for line in top.splitlines()[1:] if line.strip()]
    assert rows and all(r[0] in ("107", "qemu") and r[1] == "none" for r in rows), top
    assert any("qemu-system" in r[2] for r in rows), top

    # stop: the runtime's SIGTERM becomes an ACPI power-down, the guest powers off
    p("pod", "stop", "-t", "90", "tapvirt-vm", timeout=120)
    logs = _logs(p)
    assert "ACPI power-down" in logs and "TV-POWERDOWN" in logs, logs[-3000:]
    assert "ended: shutdown" in logs
    state = p("inspect", "tapvirt-vm-launcher", "--format", "{{.State.ExitCode}}").stdout
    assert state.strip() == "0"

    p("kube", "down", str(manifest))
    commands = [line.split()[0] for line in calls.read_text().splitlines()]
    assert "ADD" in commands and "DEL" in commands, commands
    assert not os.path.exists(f"/run/netns/{found['netns']}")
    assert not list((p.work / "state").iterdir()), "DEL removed the attachment record"
    with contextlib.suppress(FileNotFoundError):
        assert not [f for f in os.listdir("/var/lib/cni/results") if f.startswith(NET)]
    # nothing in the root namespace: podman's default bridge never came up
    assert run(["ip", "link", "show", "cni-podman0"], check=False).returncode != 0
