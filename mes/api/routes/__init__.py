"""Thin routers: validate, submit a command or read, shape the answer."""
