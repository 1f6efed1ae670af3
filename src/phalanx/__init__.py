"""phalanx: a fault-tolerant, Redis-compatible key-value store built on Raft."""

from phalanx.compiled import activate as _activate_compiled

__version__ = "0.1.0"

# Load the mypyc-compiled hot path if a fresh build exists (phalanx/compiled.py); else pure.
_activate_compiled()
