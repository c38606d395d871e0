"""A TCP forwarder from the host's loopback into a lab namespace (a browser on the host reaching
a server that listens only inside the lab).

It listens on 127.0.0.1 in the host's namespace; for each connection a thread enters the
target namespace with setns(2) (a thread's own network namespace: the rest of the process
stays where it is), connects there, and copies bytes both ways until both sides are done. A
socket keeps the namespace it was made in, so the two ends of a connection live in two
namespaces. Nothing is configured anywhere: no route, no address, no rule.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import selectors
import socket
import threading
from types import TracebackType

CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)


def enter_netns(name: str) -> None:
    """Move the calling thread into network namespace ``name`` (`ip netns add`'s)."""
    fd = os.open(f"/run/netns/{name}", os.O_RDONLY)
    try:
        if _libc.setns(fd, CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"setns({name}): {os.strerror(err)}")
    finally:
        os.close(fd)


class Forwarder:
    """127.0.0.1:``port`` (0: any free one) → ``host``:``target_port`` in namespace ``netns``;
    a context manager, or ``start()`` / ``close()``."""

    def __init__(self, netns: str, host: str, target_port: int, *, port: int = 0) -> None:
        self.netns = netns
        self.target = (host, target_port)
        self._listener = socket.create_server(("127.0.0.1", port))
        self.port: int = self._listener.getsockname()[1]
        self._closed = threading.Event()
        self._threads: list[threading.Thread] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Forwarder:
        self._spawn(self._accept_loop)
        return self

    def close(self) -> None:
        self._closed.set()
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)
        self._listener.close()
        for thread in self._threads:
            thread.join(timeout=5)

    def __enter__(self) -> Forwarder:
        return self.start()

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def _spawn(self, target: object, *args: object) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True)  # type: ignore[arg-type]
        self._threads = [t for t in self._threads if t.is_alive()]
        self._threads.append(thread)
        thread.start()

    def _accept_loop(self) -> None:
        while not self._closed.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return  # closed
            self._spawn(self._connection, client)

    def _connection(self, client: socket.socket) -> None:
        with client:
            try:
                enter_netns(self.netns)  # this thread only; it ends with the connection
                upstream = socket.create_connection(self.target, timeout=10)
            except OSError:
                return  # the client sees the connection closed
            with upstream:
                upstream.settimeout(None)
                self._pump(client, upstream)

    def _pump(self, a: socket.socket, b: socket.socket) -> None:
        """Copy both ways; an end's EOF is passed on as a half-close; done when both are."""
        peer = {a: b, b: a}
        with selectors.DefaultSelector() as sel:
            for sock in peer:
                sel.register(sock, selectors.EVENT_READ)
            while sel.get_map() and not self._closed.is_set():
                for key, _ in sel.select(timeout=0.5):
                    src: socket.socket = key.fileobj  # type: ignore[assignment]
                    try:
                        data = src.recv(65536)
                        if data:
                            peer[src].sendall(data)
                            continue
                        peer[src].shutdown(socket.SHUT_WR)
                    except OSError:
                        return
                    sel.unregister(src)
