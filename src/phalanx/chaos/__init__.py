"""phalanx.chaos: the chaos lab. Real processes, real faults, measured availability, RTO and RPO.

Rules of this package: it sees the system only from outside. It starts servers only through the
launcher (`phalanx.ops.launcher`, the code behind `phalanx up`), talks to them only as a client
(RESP and admin HTTP), injects faults only through `ClusterControl`, and never imports
`phalanx.server` (tests/architecture checks it). See docs/architecture.md.
"""
