"""``python -m bench``: run every benchmark script in one go (see bench/runall.py)."""

from bench.runall import main

raise SystemExit(main())
