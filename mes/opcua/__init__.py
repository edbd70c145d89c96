"""OPC UA: the embedded server, the external-server client and their helpers."""
