"""Join a bridge without privileges through qemu-bridge-helper, the way libvirt does.

The helper (setuid root or with CAP_NET_ADMIN, governed by /etc/qemu/bridge.conf) creates
a tap, enslaves it to the bridge and sends its fd over a UNIX socket. tapvirt runs it
itself, rather than letting QEMU do it (`{"type":"bridge","helper":...}`), so the fd is
owned and checked like every other tap fd and the argv is the same `fd=N` form.
"""

from __future__ import annotations

import os
import socket
import subprocess

from tapvirt import netcodes as nc
from tapvirt.errors import TapvirtError
from tapvirt.host.api import OwnedFds

HELPER_TIMEOUT = 10.0


def run_bridge_helper(bridge: str, *, helper: str, vnet_hdr: bool) -> OwnedFds:
    """Run the helper and receive exactly one tap fd; everything else is an error."""
    argv = [helper, *(["--use-vnet"] if vnet_hdr else []), f"--br={bridge}"]
    subject = f"bridge {bridge}"
    if not os.access(helper, os.X_OK):
        raise TapvirtError(nc.BRIDGE_HELPER_FAILED, subject,
                           f"{helper} does not exist or is not executable",
                           "install qemu-system-common, or join the bridge with a precreated "
                           "tap (managed='no')")
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    fds = OwnedFds()
    try:
        with ours, theirs:
            argv.append(f"--fd={theirs.fileno()}")
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                    stderr=subprocess.PIPE, pass_fds=(theirs.fileno(),),
                                    text=True)
            theirs.close()
            try:
                _out, err = proc.communicate(timeout=HELPER_TIMEOUT)
            except subprocess.TimeoutExpired:
                proc.kill()
                _out, err = proc.communicate()
            ours.setblocking(False)
            try:
                _msg, received, _flags, _addr = socket.recv_fds(ours, 16, 4)
            except (BlockingIOError, OSError):
                received = []
            for fd in received:
                fds.add(fd)
            if proc.returncode != 0 or len(fds) != 1:
                fds.close()
                stderr = " ".join((err or "").split()) or f"exit status {proc.returncode}"
                raise TapvirtError(
                    nc.BRIDGE_HELPER_FAILED, subject,
                    f"{' '.join(argv)}: failed to communicate with bridge helper: {stderr}",
                    f"as root: allow the bridge in /etc/qemu/bridge.conf ('allow {bridge}') "
                    f"and make {helper} setuid root (chmod u+s), or precreate a tap on the "
                    "bridge and use it with managed='no'")
            os.set_inheritable(fds.fds[0], False)
            return fds
    except BaseException:
        fds.close()
        raise
