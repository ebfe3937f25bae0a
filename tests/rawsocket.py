"""A WebSocket client that completes the handshake and then never reads: the worst subscriber."""

from __future__ import annotations

import asyncio
import base64
import os
import socket

RECEIVE_BUFFER_BYTES = 4096


async def open_non_reader(host: str, port: int, path: str) -> socket.socket:
    """Connect with a tiny receive buffer, upgrade to WebSocket, and return the unread socket."""
    loop = asyncio.get_running_loop()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECEIVE_BUFFER_BYTES)
    sock.setblocking(False)
    await loop.sock_connect(sock, (host, port))
    key = base64.b64encode(os.urandom(16)).decode()
    request = (
        f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    await loop.sock_sendall(sock, request.encode())
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = await loop.sock_recv(sock, 1)
        assert chunk, "server closed during the handshake"
        head += chunk
    assert head.startswith(b"HTTP/1.1 101"), head
    return sock


async def read_until_closed(sock: socket.socket) -> bytes:
    """Drain everything the server sent until it closes or resets the connection."""
    loop = asyncio.get_running_loop()
    received = bytearray()
    try:
        while chunk := await loop.sock_recv(sock, 65536):
            received += chunk
    except ConnectionResetError:
        pass
    return bytes(received)


def masked_text_frame(text: str) -> bytes:
    """A client-to-server WebSocket text frame (masked, as RFC 6455 requires of clients)."""
    payload = text.encode()
    mask = os.urandom(4)
    length = len(payload)
    if length < 126:
        header = bytes([0x81, 0x80 | length])
    else:
        header = bytes([0x81, 0x80 | 126]) + length.to_bytes(2, "big")
    return header + mask + bytes(byte ^ mask[i % 4] for i, byte in enumerate(payload))
