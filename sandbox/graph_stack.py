"""The Microsoft side of the sandbox in one block: the identity platform and Graph, each over HTTPS.

    with MicrosoftStack.start() as ms:
        app = ms.identity.new_app()
        ms.graph.add_mailbox(app.tenant_id, "staff@contoso.com")
        config = {"type": "outlook", "tenant_id": app.tenant_id, "client_id": app.client_id, ...,
                  **ms.connector_urls()}

Both servers use certificates of one throwaway CA (`ms.ca.bundle`); Graph's own calls to
notification URLs trust that CA too, so receivers served with sandbox.tls work.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

import httpx

from sandbox import graph, microsoft_identity
from sandbox.tls import TestCA, TLSServedApp


@dataclass
class MicrosoftStack:
    ca: TestCA
    identity: microsoft_identity.MicrosoftIdentity
    graph: graph.GraphSandbox
    login: TLSServedApp
    api: TLSServedApp

    @classmethod
    @contextlib.contextmanager
    def start(cls, *, ca: TestCA | None = None, host: str = "127.0.0.1",
              ports: tuple[int, int] = (0, 0)) -> Iterator["MicrosoftStack"]:
        own_ca = ca is None
        ca = ca or TestCA()
        try:
            with cls._serving(ca, host, ports) as stack:
                yield stack
        finally:
            if own_ca:
                ca.close()  # no textback-ca-* folder is left in the temp directory

    @classmethod
    @contextlib.contextmanager
    def _serving(cls, ca: TestCA, host: str, ports: tuple[int, int]) -> Iterator["MicrosoftStack"]:
        identity = microsoft_identity.MicrosoftIdentity()
        with httpx.Client(verify=ca.ssl_context(), timeout=10.0) as webhook_http:
            sandbox = graph.GraphSandbox(identity, webhook_http=webhook_http)
            login = TLSServedApp(microsoft_identity.create_app(identity), ca=ca, host=host, port=ports[0]).start()
            try:
                api = TLSServedApp(graph.create_app(sandbox), ca=ca, host=host, port=ports[1]).start()
                try:
                    identity.add_resource(api.url)
                    yield cls(ca, identity, sandbox, login, api)
                finally:
                    api.signal_stop()
                    login.signal_stop()
                    api.wait_stopped()
            finally:
                login.stop()

    def connector_urls(self) -> dict[str, str]:
        """The `base_url`, `login_url` and `ca_bundle` of an outlook connector pointed at this stack."""
        return {"base_url": self.api.url, "login_url": self.login.url, "ca_bundle": self.ca.bundle}
