"""Start documents for real: `tapvirt create --paused` as an unprivileged user, QMP asked
that the guest is paused, `tapvirt destroy`. QEMU's own checks of device properties, buses
and addresses are the judge: a command line QEMU rejects fails with QEMU's message.

Root only: one unprivileged user (no capabilities) with a private tun node and runtime
directory, and one `tv-` network namespace per worker, so that documents with fixed VNC or
SPICE ports (or socket interfaces' ports) can run side by side. The namespaces have only
`lo`, with a route for multicast (224.0.0.0/4) so that an `<interface type='mcast'>` can
join its group: socket interfaces never reach beyond the namespace. Taps are precreated
per document in the worker's namespace, owned by the user, and deleted after the guest is
destroyed; the qemu-nbd
servers of nbd disks run as the user in that namespace and end with the document.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import queue
import shutil
import sys
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from tests.corpus.startable import Plan, make_startable
from tests.support import guest
from tests.support.sandbox import (
    AsUser,
    CodeCopy,
    Netns,
    User,
    private_tun_node,
    run,
    world_readable_dir,
)

if TYPE_CHECKING:
    from tests.corpus.coverage import Outcome


@dataclass(frozen=True)
class Result:
    path: Path
    ok: bool
    error: str
    seconds: float


@dataclass
class Worker:
    index: int
    netns: Netns
    as_user: AsUser


def _stateless_firmware_descriptor(user: User) -> None:
    """Debian 12's ovmf ships only split (code + varstore) descriptors, and libvirt's
    `<os firmware='efi'><loader stateless='yes'/>` needs a `stateless` one (libvirt's own
    tests use a made-up `45-ovmf-sev-stateless.json`). Give the test user one for Debian's
    OVMF_CODE_4M.fd, which runs without a varstore flash (OVMF then emulates the variable
    store): it matches only stateless loaders, so no other document is affected."""
    code = "/usr/share/OVMF/OVMF_CODE_4M.fd"
    if not os.path.exists(code):
        return
    d = user.home / ".config" / "qemu" / "firmware"
    d.mkdir(parents=True, exist_ok=True)
    (d / "45-tapvirt-test-stateless.json").write_text(json.dumps({
        "description": "tapvirt's e2e lab: Debian's OVMF, stateless (no varstore flash)",
        "interface-types": ["uefi"],
        "mapping": {"device": "flash", "mode": "stateless",
                    "executable": {"filename": code, "format": "raw"}},
        "targets": [{"architecture": "x86_64", "machines": ["pc-i440fx-*", "pc-q35-*"]}],
        "features": [], "tags": [],
    }))
    for p in (user.home / ".config", user.home / ".config" / "qemu", d, *d.iterdir()):
        os.chown(p, user.uid, user.gid)


@dataclass
class StartLab:
    """The user, namespaces and scratch space every document is started with."""

    scratch: Path
    user: User
    code: CodeCopy
    tun: Path
    xdg: Path
    image: guest.GuestImage
    workers: list[Worker]
    # next() on a count is atomic under the GIL: unique names across worker threads
    _serials: Iterator[int] = field(default_factory=lambda: itertools.count(1))

    @classmethod
    @contextlib.contextmanager
    def create(cls, jobs: int = 3) -> Iterator[StartLab]:
        if os.geteuid() != 0:
            raise PermissionError("starting documents needs root (user, namespaces, taps)")
        image = guest.build()
        stack = contextlib.ExitStack()
        # short: the QMP socket path (sun_path, 108 bytes) lives under it
        scratch = world_readable_dir("tv-cs-")
        try:
            stack.callback(shutil.rmtree, scratch, True)
            code = CodeCopy.create()
            stack.callback(code.close)
            # the user cannot write __pycache__ there: compile once, or every tapvirt
            # command of every document compiles the whole package again (~15 %)
            run([sys.executable, "-m", "compileall", "-q", str(code.root)])
            user = User.create(scratch)
            stack.callback(user.close)
            _stateless_firmware_descriptor(user)
            tun = private_tun_node(scratch, user.uid, user.gid)
            xdg = scratch / "x"
            xdg.mkdir(mode=0o700)
            os.chown(xdg, user.uid, user.gid)
            workers = []
            for i in range(max(1, jobs)):
                ns = Netns.create("tv-cs")
                stack.callback(ns.close)
                ns.ip("route", "add", "224.0.0.0/4", "dev", "lo")
                workers.append(Worker(i, ns, AsUser(user, ns, code,
                                                    env={"XDG_RUNTIME_DIR": str(xdg)})))
            lab = cls(scratch, user, code, tun, xdg, image, workers)
            stack.callback(lab.kill_leftovers)
            yield lab
        finally:
            stack.close()

    def kill_leftovers(self) -> None:
        """Whatever a failed destroy left running, by pid from the state files."""
        root = self.xdg / "tapvirt"
        if not root.is_dir():
            return
        for d in root.iterdir():
            with contextlib.suppress(Exception):
                st = json.loads((d / "state.json").read_text())
                for key in ("supervisor_pid", "qemu_pid"):
                    if st.get(key):
                        os.kill(int(st[key]), 9)

    # -- one document ---------------------------------------------------------------------

    def _plan(self, path: Path, serial: int) -> tuple[str, Path, Plan]:
        name = f"tvc{serial}"
        docdir = self.scratch / name
        docdir.mkdir(mode=0o755)
        os.chown(docdir, self.user.uid, self.user.gid)
        plan = make_startable(path.read_text(), name=name, scratch=docdir,
                              tap_prefix=f"tvc{serial}n", kernel=str(self.image.kernel),
                              initrd=str(self.image.initrd))
        return name, docdir, plan

    def _prepare(self, worker: Worker, docdir: Path, plan: Plan) -> str | None:
        for img in plan.images:
            made = run(["qemu-img", "create", "-q", "-f", img.fmt, str(img.path), img.size],
                       check=False)
            if made.returncode != 0:
                return f"placeholder image {img.path.name} ({img.fmt}): {made.stderr.strip()}"
            os.chown(img.path, self.user.uid, self.user.gid)
        for fifo in plan.fifos:
            os.mkfifo(fifo, 0o600)
            os.chown(fifo, self.user.uid, self.user.gid)
        for n, export in enumerate(plan.nbd):
            # as the user, in the guest's namespace (its loopback): nothing leaves it
            pid_file = docdir / f"nbd{n}.pid"
            served = worker.as_user.run(export.argv(pid_file), timeout=30)
            if served.returncode != 0:
                return f"qemu-nbd for {export.image.path.name}: {served.stderr.strip()}"
        for tap in plan.taps:
            args = ["ip", "tuntap", "add", "mode", "tap", "user", self.user.name, "vnet_hdr",
                    "name", tap.name]
            if tap.multi_queue:
                args.append("multi_queue")
            worker.netns.exec(*args)
            mtu = ["mtu", str(tap.mtu)] if tap.mtu else []
            worker.netns.ip("link", "set", tap.name, *mtu, "up")
        xml = docdir / "domain.xml"
        xml.write_text(plan.xml)
        xml.chmod(0o644)
        return None

    def _paused(self, name: str) -> str | None:
        from tapvirt.errors import TapvirtError
        from tapvirt.qemu.qmp import QmpClient

        sock = self.xdg / "tapvirt" / name / "qmp.sock"
        try:
            with QmpClient.connect(str(sock), subject=name, timeout=10) as qmp:
                status = qmp.execute("query-status")
        except TapvirtError as err:
            return f"QMP: {err.message}"
        if status.get("running") or status.get("status") not in ("prelaunch", "paused"):
            return f"QMP query-status says {status!r}, not paused"
        return None

    def start_one(self, path: Path, worker: Worker) -> Result:
        t0 = time.monotonic()
        serial = next(self._serials)
        name, docdir, plan = self._plan(path, serial)
        try:
            error = self._prepare(worker, docdir, plan)
            if error is None:
                proc = worker.as_user.tapvirt("create", "--paused", "--tun-node",
                                              str(self.tun), str(docdir / "domain.xml"),
                                              timeout=90)
                if proc.returncode != 0:
                    error = (proc.stderr.strip() or proc.stdout.strip()
                             or f"exit {proc.returncode}")
                else:
                    error = self._paused(name)
                    gone = worker.as_user.tapvirt("destroy", name, timeout=60)
                    if error is None and gone.returncode != 0:
                        error = f"destroy failed: {gone.stderr.strip()}"
        finally:
            for pid_file in docdir.glob("nbd*.pid"):  # the qemu-nbd this document ran
                with contextlib.suppress(ValueError, OSError):
                    os.kill(int(pid_file.read_text().strip()), 15)
            for tap in plan.taps:
                worker.netns.ip("link", "del", tap.name, check=False)
            shutil.rmtree(docdir, ignore_errors=True)
            shutil.rmtree(self.xdg / "tapvirt" / name, ignore_errors=True)
        return Result(path, error is None, error or "", time.monotonic() - t0)

    def start_all(self, paths: Sequence[Path]) -> list[Result]:
        free: queue.Queue[Worker] = queue.Queue()
        for w in self.workers:
            free.put(w)

        def job(path: Path) -> Result:
            worker = free.get()
            try:
                return self.start_one(path, worker)
            finally:
                free.put(worker)

        with ThreadPoolExecutor(max_workers=len(self.workers)) as pool:
            return list(pool.map(job, paths))


def start_outcomes(outcomes: Sequence[Outcome], *, jobs: int = 3) -> None:
    """Fill in `started` / `start_error` of accepted coverage outcomes."""
    with StartLab.create(jobs) as lab:
        for outcome, result in zip(outcomes, lab.start_all([o.path for o in outcomes]),
                                   strict=True):
            outcome.started = result.ok
            outcome.start_error = result.error.replace("\n", " ")

