"""Config schemas (schema.py), Hydra composition (compose.py), the typed job and its file
(job.py, codec.py), and the checks every task shares (validate.py)."""
