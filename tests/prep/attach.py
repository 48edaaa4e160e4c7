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
