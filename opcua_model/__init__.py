"""The OPC UA information model of mes and its loader (filled in by the OPC UA issue)."""
