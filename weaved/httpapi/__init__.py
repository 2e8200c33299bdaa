"""Weave's HTTP API (127.0.0.1:6784), served by the daemon when the spec asks."""
