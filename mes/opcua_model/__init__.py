"""The OPC UA information model of mes: the companion NodeSets it builds on and our own."""
