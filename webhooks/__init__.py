"""The web edge: FastAPI routes (verify, parse, hand off, answer) and the `textback` CLI."""
