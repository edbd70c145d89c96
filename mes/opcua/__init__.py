"""OPC UA: the embedded server and the external-server client."""
