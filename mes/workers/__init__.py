"""Printer workers: leader only, one poller per printer, fenced by the leader's epoch."""
