"""The change-event stream of a node (Server-Sent Events)."""
