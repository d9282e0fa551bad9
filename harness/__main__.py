"""`python -m harness` is the same as the `c6bench` console script."""

from harness.cli import main

raise SystemExit(main())
