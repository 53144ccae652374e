"""A TCP proxy between the store and a Redis server that can lose the server's replies
(FAULTS.md: a proxy for delay, blackhole or reset): while ``drop_replies`` is set, every
command still reaches the server and runs, but its answer never reaches the client; while
``blackhole`` is set, nothing passes either way (a network partition of this client only)."""

from __future__ import annotations

import socket
import threading


class ReplyProxy:
    def __init__(self, server_port: int) -> None:
        self.server_port = server_port
        self.drop_replies = threading.Event()
        self.blackhole = threading.Event()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self._listener.getsockname()[1])
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            server = socket.create_connection(("127.0.0.1", self.server_port))
            threading.Thread(target=self._pump, args=(client, server, False), daemon=True).start()
            threading.Thread(target=self._pump, args=(server, client, True), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, replies: bool) -> None:
        try:
            while data := src.recv(65536):
                if not (replies and self.drop_replies.is_set()) \
                        and not self.blackhole.is_set():
                    dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def close(self) -> None:
        self._closed = True
        self._listener.close()
