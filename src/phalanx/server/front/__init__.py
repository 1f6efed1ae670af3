"""The Redis front end of a node: RESP clients in, replies out.

Rooms (each module's docstring states its rules; the whole is described in
docs/architecture.md):
- `listener`: `RespServer`, the listening socket (start/stop, accept) and the command
  dispatch table (command name -> handler, one place).
- `connection`: one client connection (asyncio.Protocol): parsing, pipelining, replies in
  order, flow control.
- `session`: the client session (`ClientState`): AUTH, HELLO, SELECT, and who may run what;
  `acl`: the ACL command (users replicated through the cluster map); `clients`: CLIENT.
- `transactions`, `blocking`, `pubsub`: MULTI/EXEC/WATCH, the blocking pops, Pub/Sub.
- `router`: the one data path: a single path for writes and one for reads (the local leader's
  proposal and the lease / batched ReadIndex read are its fast cases), forwarding to the
  leader, -MOVED.
- `fanout`: commands spanning shards (MGET/EXISTS over shards, KEYS, SCAN, DBSIZE, FLUSH*),
  and PHALANX.SHARD, one shard's share of such a command.
- `server_commands` and `cluster_commands`: the command groups that are not data commands.
- `replies`: reply and error mapping (state-machine replies to RESP, errors to error lines).
- `replicas`: `ReplicaRegistry`, the narrow interface the front end needs from the node.

Import rule: the front end never imports `phalanx.server.node` (the node imports the front
end); it sees the node only through `ReplicaRegistry`.
"""
