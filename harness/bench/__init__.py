"""Benchmarks: the plug-ins (one module each; collectives/ one file per op), their registry
(registry.py), the one driver that runs them (driver.py) and `harness bench` (task.py)."""
