"""Jobs: outbox execution on Dramatiq, the relay, retries and the connectors' runtime."""
