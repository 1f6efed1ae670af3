"""Operations tooling: what runs around a phalanx cluster, never inside a node.

- `phalanx.ops.launcher`: THE local-cluster launcher (plan, node configs, start, wait for a
  leader, restart, stop); the CLI, the chaos lab, the benchmarks and the tests all use it.
- `phalanx.ops.cluster_file`: `DIR/cluster.json`, the record of a local cluster.
- `phalanx.ops.admin`: the nodes' admin HTTP API from outside (status, leader, failover).
- `phalanx.ops.haproxy`: an HAProxy config whose health checks use the nodes' admin endpoints.

Rules of this package: nodes are separate processes reached over HTTP and signals; nothing here
imports the node runtime (only `phalanx.server.config`, the node's config file format).
See docs/architecture.md.
"""
