"""`python -m mes` runs a node, like the `server` console script."""

from mes.cli import server

server()
