"""A minimal RFB (VNC) client and PNG reader for the graphics tests. Standard library
only, so it also runs as a script as the unprivileged user inside a test namespace:

    python rfb.py unix PATH | python rfb.py tcp HOST PORT

prints {"version", "security", "width", "height", "name"} as JSON. With security type 1
(None) offered it completes the handshake up to ServerInit (the screen size); with only
type 2 (VNC password) it stops after the security types (the server wants a password).
"""

from __future__ import annotations

import json
import socket
import struct
import sys
import zlib
from typing import Any


def _recv(s: socket.socket, n: int) -> bytes:
    out = b""
    while len(out) < n:
        chunk = s.recv(n - len(out))
        if not chunk:
            raise ConnectionError(f"RFB server closed after {len(out)} of {n} bytes")
        out += chunk
    return out


def handshake(s: socket.socket) -> dict[str, Any]:
    version = _recv(s, 12)
    if not version.startswith(b"RFB "):
        raise ConnectionError(f"not an RFB server: {version!r}")
    s.sendall(b"RFB 003.008\n")
    (count,) = struct.unpack("!B", _recv(s, 1))
    if count == 0:
        (length,) = struct.unpack("!I", _recv(s, 4))
        raise ConnectionError(_recv(s, length).decode(errors="replace"))
    types = list(_recv(s, count))
    out: dict[str, Any] = {"version": version.decode().strip(), "security": types}
    if 1 not in types:
        return out
    s.sendall(b"\x01")
    (result,) = struct.unpack("!I", _recv(s, 4))
    if result != 0:
        raise ConnectionError(f"security result {result}")
    s.sendall(b"\x01")  # ClientInit, shared
    width, height = struct.unpack("!HH", _recv(s, 4))
    _recv(s, 16)  # pixel format
    (length,) = struct.unpack("!I", _recv(s, 4))
    out.update(width=width, height=height, name=_recv(s, length).decode(errors="replace"))
    return out


def connect(kind: str, *where: str, timeout: float = 20.0) -> dict[str, Any]:
    if kind == "unix":
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        addr: Any = where[0]
    else:
        s = socket.socket(socket.AF_INET6 if ":" in where[0] else socket.AF_INET)
        addr = (where[0], int(where[1]))
    with s:
        s.settimeout(timeout)
        s.connect(addr)
        return handshake(s)


def png_pixels(data: bytes) -> tuple[int, int, list[bytes]]:
    """(width, height, rows of RGB bytes) of an 8-bit RGB non-interlaced PNG (QEMU's)."""
    if data[:8] != b"\x89PNG\r\n\x1a\n":
        raise ValueError("not a PNG")
    pos, idat, header = 8, b"", b""
    while pos < len(data):
        (length,) = struct.unpack("!I", data[pos:pos + 4])
        kind, body = data[pos + 4:pos + 8], data[pos + 8:pos + 8 + length]
        if kind == b"IHDR":
            header = body
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    width, height, depth, color = struct.unpack("!IIBB", header[:10])
    if (depth, color) != (8, 2):
        raise ValueError(f"PNG depth {depth} colour type {color}: only 8-bit RGB is read")
    raw, bpp, stride = zlib.decompress(idat), 3, width * 3
    rows: list[bytes] = []
    prev = bytearray(stride)
    for y in range(height):
        f = raw[y * (stride + 1)]
        line = bytearray(raw[y * (stride + 1) + 1:(y + 1) * (stride + 1)])
        for x in range(stride):
            a = line[x - bpp] if x >= bpp else 0
            b = prev[x]
            c = prev[x - bpp] if x >= bpp else 0
            if f == 1:
                line[x] = (line[x] + a) & 0xFF
            elif f == 2:
                line[x] = (line[x] + b) & 0xFF
            elif f == 3:
                line[x] = (line[x] + (a + b) // 2) & 0xFF
            elif f == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                pr = a if pa <= pb and pa <= pc else b if pb <= pc else c
                line[x] = (line[x] + pr) & 0xFF
        rows.append(bytes(line))
        prev = line
    return width, height, rows


if __name__ == "__main__":
    print(json.dumps(connect(sys.argv[1], *sys.argv[2:])))
