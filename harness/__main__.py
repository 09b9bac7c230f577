"""`python -m harness ...` (what `torchrun -m harness bench ...` runs on every rank)."""

from harness.cli import main

if __name__ == "__main__":
    main()
