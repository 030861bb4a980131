"""``python -m xviz ...``: the command line (see ``xviz.cli``)."""

from xviz.cli import main

raise SystemExit(main())
