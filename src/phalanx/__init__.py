"""phalanx: a fault-tolerant, Redis-compatible key-value store built on Raft."""

__version__ = "0.1.0"
