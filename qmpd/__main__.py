"""``python -m qmpd``: the same as the ``qmpd`` console script."""

from qmpd.cli import main

raise SystemExit(main())
