"""Operations tooling: configuration for the software that runs around a phalanx cluster.

`phalanx.ops.haproxy` renders an HAProxy config whose health checks use the nodes' admin
endpoints (`/ready`, `/primary`). Nothing here runs inside a node.
"""
