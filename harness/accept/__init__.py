"""`harness accept`: hardware acceptance. Health checks (health.py), the benchmark suite run on
every rank at once (task.py, through the one benchmark driver), figures judged against the
hardware profile, site references and the peers (gates.py), and the report (report.py)."""
