"""The textback domain: no web framework, no vendor SDK, no job queue."""
