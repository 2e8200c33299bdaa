"""weaved: declarative cross-host container network, wire-compatible with Weave Net 2.8.1."""

__version__ = "0.1.0"
