"""What the unprivileged launcher does with a prepared device, as small scripts run by
`AsUser.python`: attach to a tap through the tun node, or open a macvtap's node, then
report what the kernel says (TUNGETIFF) and push one frame through."""

from __future__ import annotations

# Runs as the unprivileged user inside the namespace. Prints: name, flags, frame result.
TAP_ATTACH = r"""
import fcntl, os, struct
name, node, queues = {name!r}, {node!r}, {queues}
flags = 0x0002 | 0x1000 | (0x0100 if queues > 1 else 0)
fds = []
try:
    for _ in range(queues):
        fd = os.open(node, os.O_RDWR | os.O_CLOEXEC)
        fds.append(fd)
        fcntl.ioctl(fd, 0x400454CA, struct.pack("16sH22x", name.encode(), flags))
except OSError as e:
    print("ERR", e.errno)
    raise SystemExit(0)
r = fcntl.ioctl(fds[0], 0x800454D2, bytes(40))
frame = b"\xff" * 6 + bytes.fromhex("020000000001") + b"\x88\xb5" + b"tapvirt-prep" * 4
try:
    os.write(fds[0], frame)
    sent = "sent"
except OSError as e:
    sent = f"errno{{e.errno}}"
print(r[:16].rstrip(b"\0").decode(), hex(struct.unpack("H", r[16:18])[0]), len(fds), sent)
"""

MACVTAP_OPEN = r"""
import fcntl, os, struct
node, queues = {node!r}, {queues}
fds = []
try:
    for _ in range(queues):
        fds.append(os.open(node, os.O_RDWR | os.O_CLOEXEC))
except OSError as e:
    print("ERR", e.errno)
    raise SystemExit(0)
r = fcntl.ioctl(fds[0], 0x800454D2, bytes(40))
print(r[:16].rstrip(b"\0").decode(), hex(struct.unpack("H", r[16:18])[0]), len(fds))
"""


def tap_attach(name: str, node: str, queues: int = 1) -> str:
    return TAP_ATTACH.format(name=name, node=node, queues=queues)


def macvtap_open(node: str, queues: int = 1) -> str:
    return MACVTAP_OPEN.format(node=node, queues=queues)

# An intruder (not the tap's owner) trying to get a queue on a multi-queue tap while
# tapvirt-prep creates it: it spins on TUNSETIFF for the final name (the kernel lets
# anyone attach while the new tap has no owner yet), and a second process watches
# netlink for every new link and attaches to whatever name appears. Each keeps the fds
# it won and prints one line per win; both stop when stdin closes.
SPIN_ATTACH = r"""
import fcntl, os, select, struct, sys
name, node = {name!r}, {node!r}
req = struct.pack("16sH22x", name.encode(), 0x0002 | 0x1000 | 0x0100)
fd, won = os.open(node, os.O_RDWR), []
print("ready", flush=True)
while not select.select([sys.stdin], [], [], 0)[0]:
    for _ in range(5000):
        try:
            fcntl.ioctl(fd, 0x400454CA, req)
        except OSError:
            continue
        won.append(fd)
        print("won", name, flush=True)
        fd = os.open(node, os.O_RDWR)
"""

WATCH_ATTACH = r"""
import fcntl, os, select, socket, struct, sys
node = {node!r}
nl = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE)
nl.bind((0, 1))  # RTMGRP_LINK: every new link in this namespace
won = []
print("ready", flush=True)
while True:
    r = select.select([nl, sys.stdin], [], [])[0]
    if sys.stdin in r:
        break
    data = nl.recv(65536)
    off = 0
    while off + 16 <= len(data):
        ln, typ = struct.unpack_from("IH", data, off)
        if typ == 16:  # RTM_NEWLINK
            a = off + 32
            while a + 4 <= off + ln:
                alen, atyp = struct.unpack_from("HH", data, a)
                if atyp == 3 and alen > 4:  # IFLA_IFNAME
                    name = data[a + 4:a + alen].rstrip(b"\0")
                    fd = os.open(node, os.O_RDWR)
                    req = struct.pack("16sH22x", name, 0x0002 | 0x1000 | 0x0100)
                    try:
                        fcntl.ioctl(fd, 0x400454CA, req)
                        won.append(fd)
                        print("won", name.decode(), flush=True)
                    except OSError:
                        os.close(fd)
                a += (alen + 3) & ~3
        off += (ln + 3) & ~3
"""


def spin_attach(name: str, node: str) -> str:
    return SPIN_ATTACH.format(name=name, node=node)


def watch_attach(node: str) -> str:
    return WATCH_ATTACH.format(node=node)
