"""One module per external system, each behind a small protocol from connectors.base."""
