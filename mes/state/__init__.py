"""The replicated state machine: commands in, SQLite state and results out."""
