"""The chaos bench's TCP proxy (bench/outage_proxy.py) passes a client's close on to the server behind it."""

from __future__ import annotations

import socket
import threading

from bench.outage_proxy import OutageProxy


def test_a_client_that_goes_away_closes_its_connection_to_the_server_too():
    """A worker the chaos bench SIGKILLs must not leave its database connections open behind the proxy."""
    server = socket.create_server(("127.0.0.1", 0))
    ended = threading.Event()

    def serve() -> None:
        connection, _ = server.accept()
        connection.settimeout(10)
        while connection.recv(1024):  # echoes until the proxy closes its end
            connection.sendall(b"ok")
        ended.set()
        connection.close()

    threading.Thread(target=serve, daemon=True).start()
    proxy = OutageProxy("127.0.0.1", server.getsockname()[1]).start()
    try:
        client = socket.create_connection(("127.0.0.1", proxy.port), timeout=10)
        client.sendall(b"hello")
        assert client.recv(1024) == b"ok"
        client.close()
        assert ended.wait(10), "the server's end stayed open after the client left"
    finally:
        proxy.cut()
        server.close()
