"""Serve ASGI apps over real HTTP on 127.0.0.1, each on its own port, in background threads."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator

import uvicorn


class ServedApp:
    """One uvicorn server running an ASGI app on loopback in a daemon thread."""

    def __init__(self, app, *, host: str = "127.0.0.1", port: int = 0) -> None:
        self.app = app
        self.host = host
        self._auto_port = not port
        self.port = port or free_port(host)
        self._build()

    def _build(self) -> None:
        self._server = uvicorn.Server(
            uvicorn.Config(self.app, host=self.host, port=self.port, log_level="warning", access_log=False,
                           lifespan="off")
        )
        self._thread = threading.Thread(target=self._server.run, name=f"sandbox:{self.port}", daemon=True)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self, *, timeout: float = 10.0, attempts: int = 3) -> "ServedApp":
        for attempt in range(attempts):
            self._thread.start()
            deadline = time.monotonic() + timeout
            while not self._server.started:
                if not self._thread.is_alive() or time.monotonic() > deadline:
                    break
                time.sleep(0.01)
            else:
                return self
            if not self._auto_port or self._thread.is_alive() or attempt == attempts - 1:
                raise RuntimeError(f"sandbox server on port {self.port} did not start")
            # The free port picked was taken by another process before uvicorn bound it: pick another.
            self.port = free_port(self.host)
            self._build()
        raise AssertionError("unreachable")

    def stop(self) -> None:
        self.signal_stop()
        self.wait_stopped()

    def signal_stop(self) -> None:
        """Ask the server to stop without waiting (uvicorn notices within ~0.1 s); stop several, then wait."""
        self._server.should_exit = True

    def wait_stopped(self) -> None:
        self._thread.join(timeout=10)


@contextlib.contextmanager
def serve(app, *, port: int = 0) -> Iterator[ServedApp]:
    """Serve `app` for the duration of the block: `with serve(app) as s: httpx.get(s.url)`."""
    served = ServedApp(app, port=port).start()
    try:
        yield served
    finally:
        served.stop()


def free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]
