"""The sandbox's servers start even when the free port they picked is taken before they bind it."""

from __future__ import annotations

import socket

import httpx
from fastapi import FastAPI

from sandbox.server import ServedApp


def test_an_auto_picked_port_taken_meanwhile_is_replaced_by_another():
    app = FastAPI()
    app.get("/ping")(lambda: {"ok": True})
    with socket.socket() as squatter:  # another process grabbing the port between the pick and the bind
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        taken = squatter.getsockname()[1]
        served = ServedApp(app)
        served.port = taken
        served._build()  # noqa: SLF001 (as if free_port had returned the port the squatter then took)
        served.start()
        try:
            assert served.port != taken
            assert httpx.get(served.url + "/ping").json() == {"ok": True}
        finally:
            served.stop()
