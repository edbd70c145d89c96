"""Printer workers: on every node for the printers assigned to it, one poller per printer,
fenced by each printer's assignment epoch; the leader balances printers over the nodes."""
