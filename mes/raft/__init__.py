"""Raft replication of state-machine commands, with pysyncobj as the engine only."""
