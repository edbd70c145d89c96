"""Prometheus metrics of one node: a registry per node (tests run several in one process)."""
