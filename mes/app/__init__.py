"""The application layer: what every interface (REST, the page, OPC UA, notifications, the
printer workers) may ask of a farm node, independent of how it was asked.

- `commands.CommandDoor`: submit a command on behalf of a principal; the value and Raft
  index, or a `DomainError`.
- `errors.DomainError`: the one error of the layer; each interface maps its `kind` to its
  own codes (HTTP status, OPC UA StatusCode) from one table.
- `ports`: the small interfaces (reads, the cluster view, the change feed, files, live
  printer status) that `mes.node.FarmNode`, the composition root, provides.
- `raft_index`: the Raft index a request or a method call wrote or read at.
- `quotas`: per-user quotas checked before a user's write is submitted.
"""
