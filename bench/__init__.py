"""qmpd's benchmarks: standalone scripts; ``python -m bench`` runs them all (runall.py)."""
