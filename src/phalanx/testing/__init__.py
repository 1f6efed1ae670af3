"""Helpers shared by tests, the simulator and the chaos lab (never imported by product code).

Rules of this package:
- Nothing on the product path imports `phalanx.testing`.
- Contract suites here are plain functions over a harness, runnable without pytest.
"""
