"""A Wayland socket proxy that lets xdg-desktop-portal-wlr 0.7 run on a GPU-less sway.

xdg-desktop-portal-wlr 0.7.x refuses to start a screencast unless wlr-screencopy reports
a DMA-BUF format (`zwlr_screencopy_frame_v1.linux_dmabuf`) besides the shm one, even when
it will only ever use shm (its check in `start_screencast`, fixed in 0.8 which moved to
ext-image-copy-capture). Headless sway with the pixman renderer has no DMA-BUF, so the
portal answers Start with "response code 2" and the log says "unable to receive a valid
format from wlr_screencopy".

This proxy sits between xdpw and sway and, for every screencopy frame, inserts a
`linux_dmabuf` event (the shm buffer's format and size) before `buffer_done`. With no
`zwp_linux_dmabuf_v1` modifiers on offer xdpw still negotiates shm buffers with PipeWire,
so the pixels are exactly sway's: the event only gets it past the check.

Usage: python3 wl_dmabuf_shim.py UPSTREAM_SOCKET LISTEN_SOCKET (prints READY; exits on
SIGTERM). Everything else passes through byte for byte, file descriptors included.
"""

from __future__ import annotations

import array
import os
import selectors
import signal
import socket
import struct
import sys

SCREENCOPY_MANAGER = b"zwlr_screencopy_manager_v1"
WL_SHM_ARGB8888, WL_SHM_XRGB8888 = 0, 1
DRM_ARGB8888 = 0x34325241  # 'AR24'
DRM_XRGB8888 = 0x34325258  # 'XR24'
MAX_FDS = 28


def _drm_fourcc(shm_format: int) -> int:
    return {WL_SHM_ARGB8888: DRM_ARGB8888, WL_SHM_XRGB8888: DRM_XRGB8888}.get(
        shm_format, shm_format
    )


class Conn:
    """One client connection and its upstream twin, with the protocol state we track."""

    def __init__(self, client: socket.socket, upstream: socket.socket) -> None:
        self.client, self.upstream = client, upstream
        self.buf = {client: b"", upstream: b""}
        self.fds: dict[socket.socket, list[int]] = {client: [], upstream: []}
        self.registry: set[int] = set()
        self.managers: set[int] = set()
        self.frames: dict[int, tuple[int, int, int] | None] = {}

    def other(self, s: socket.socket) -> socket.socket:
        return self.upstream if s is self.client else self.client

    def pump(self, s: socket.socket) -> bool:
        fds = array.array("i")
        try:
            data, anc, _flags, _addr = s.recvmsg(65536, socket.CMSG_SPACE(MAX_FDS * fds.itemsize))
        except BlockingIOError:
            return True
        except ConnectionResetError:
            return False
        for level, kind, payload in anc:
            if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                fds.frombytes(payload[: len(payload) - (len(payload) % fds.itemsize)])
        self.fds[s].extend(fds)
        if not data:
            return False
        self.buf[s] += data
        out = bytearray()
        buf = self.buf[s]
        while len(buf) >= 8:
            obj, word = struct.unpack_from("=II", buf)
            size = word >> 16
            if size < 8 or len(buf) < size:
                break
            msg, buf = buf[:size], buf[size:]
            if s is self.client:
                self.on_request(obj, word & 0xFFFF, msg)
            else:
                out += self.on_event(obj, word & 0xFFFF, msg)
            out += msg
        self.buf[s] = buf
        if out:
            self.send(self.other(s), bytes(out), self.fds[s])
            self.fds[s] = []
        return True

    @staticmethod
    def send(s: socket.socket, data: bytes, fds: list[int]) -> None:
        while fds:
            chunk, fds = fds[:MAX_FDS], fds[MAX_FDS:]
            anc = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", chunk).tobytes())]
            sent = s.sendmsg([data[:1]], anc)
            data = data[sent:]
            for fd in chunk:
                os.close(fd)
        if data:
            s.sendall(data)

    def on_request(self, obj: int, opcode: int, msg: bytes) -> None:
        if obj == 1 and opcode == 1:  # wl_display.get_registry(new_id)
            self.registry.add(struct.unpack_from("=I", msg, 8)[0])
        elif obj in self.registry and opcode == 0:  # wl_registry.bind(name, iface, version, id)
            slen = struct.unpack_from("=I", msg, 12)[0]
            iface = msg[16 : 16 + slen - 1]
            off = 16 + ((slen + 3) & ~3)
            new_id = struct.unpack_from("=I", msg, off + 4)[0]
            if iface == SCREENCOPY_MANAGER:
                self.managers.add(new_id)
        elif obj in self.managers and opcode in (0, 1):  # capture_output[_region](new_id, ...)
            self.frames[struct.unpack_from("=I", msg, 8)[0]] = None

    def on_event(self, obj: int, opcode: int, msg: bytes) -> bytes:
        if obj == 1 and opcode == 1:  # wl_display.delete_id(id)
            dead = struct.unpack_from("=I", msg, 8)[0]
            self.frames.pop(dead, None)
            self.managers.discard(dead)
            self.registry.discard(dead)
            return b""
        if obj not in self.frames:
            return b""
        if opcode == 0:  # buffer(format, width, height, stride)
            fmt, w, h, _stride = struct.unpack_from("=IIII", msg, 8)
            self.frames[obj] = (fmt, w, h)
        elif opcode == 5:  # linux_dmabuf: the compositor has one, nothing to add
            self.frames[obj] = None
            self.frames.pop(obj)
        elif opcode == 6 and self.frames[obj] is not None:  # buffer_done
            fmt, w, h = self.frames[obj]
            self.frames[obj] = None
            return struct.pack("=IIIII", obj, (20 << 16) | 5, _drm_fourcc(fmt), w, h)
        return b""


def main(upstream_path: str, listen_path: str) -> None:
    if os.path.exists(listen_path):
        os.unlink(listen_path)
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(listen_path)
    server.listen(16)
    sel = selectors.DefaultSelector()
    sel.register(server, selectors.EVENT_READ)
    conns: dict[socket.socket, Conn] = {}
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    print("READY", flush=True)
    while True:
        for key, _ in sel.select():
            s = key.fileobj
            if s is server:
                client, _ = server.accept()
                up = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                try:
                    up.connect(upstream_path)
                except OSError:
                    client.close()
                    continue
                c = Conn(client, up)
                conns[client] = conns[up] = c
                sel.register(client, selectors.EVENT_READ)
                sel.register(up, selectors.EVENT_READ)
                continue
            c = conns.get(s)
            if c is None:
                continue
            ok = True
            try:
                ok = c.pump(s)
            except OSError:
                ok = False
            if not ok:
                for t in (c.client, c.upstream):
                    sel.unregister(t)
                    conns.pop(t, None)
                    t.close()
                for fd in c.fds[c.client] + c.fds[c.upstream]:
                    os.close(fd)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
