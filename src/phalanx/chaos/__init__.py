"""phalanx.chaos: the chaos lab. Real processes, real faults, measured availability, RTO and RPO.

Rules of this package: it starts servers only through the CLI / `phalanx.server.cluster`, talks to
them only as a client (RESP and admin HTTP), and injects faults only through `ClusterControl`.
"""
