"""OPC UA: the embedded server that shows the farm (model, mirror, redundancy, events)."""
