"""A TCP proxy that can make the server behind it unreachable, for the chaos bench's database outage.

    proxy = OutageProxy("127.0.0.1", 5432).start()   # listens on proxy.port
    proxy.cut()       # every open connection reset, new ones refused (the port stops listening)
    proxy.restore()   # accepting again

What the processes behind it see is what a network partition or a database failover shows them: their
pooled connections die mid-use and reconnecting fails until the outage ends.
"""

from __future__ import annotations

import contextlib
import socket
import threading

from bench.first_text import free_port


class OutageProxy:
    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        self.port = free_port()
        self._listener: socket.socket | None = None
        self._open: set[socket.socket] = set()
        self._lock = threading.Lock()

    def start(self) -> "OutageProxy":
        self.restore()
        return self

    def restore(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(128)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def cut(self) -> None:
        listener, self._listener = self._listener, None
        if listener is not None:
            with contextlib.suppress(OSError):
                listener.shutdown(socket.SHUT_RDWR)
            listener.close()
        with self._lock:
            for sock in self._open:
                with contextlib.suppress(OSError):
                    # shutdown first: close() alone leaves a socket another thread is reading from open
                    sock.shutdown(socket.SHUT_RDWR)
                    sock.close()
            self._open.clear()

    stop = cut

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            try:
                server = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            server.settimeout(None)
            with self._lock:
                self._open.update((client, server))
            for source, sink in ((client, server), (server, client)):
                threading.Thread(target=self._pipe, args=(source, sink), daemon=True).start()

    def _pipe(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (source, sink):
                with contextlib.suppress(OSError):
                    # shutdown first, as in cut(): the other direction's thread is blocked reading this pair,
                    # and close() alone left the database's end open for every worker the bench killed (87
                    # idle PostgreSQL connections after 11 kills, and "too many clients" for anyone else)
                    sock.shutdown(socket.SHUT_RDWR)
                with contextlib.suppress(OSError):
                    sock.close()
                with self._lock:
                    self._open.discard(sock)
