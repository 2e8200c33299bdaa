"""Prometheus metrics: Weave's families (`weave_*`) and weaved's own, on the status port."""
