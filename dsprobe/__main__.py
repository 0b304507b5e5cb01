"""``python -m dsprobe``: the ``dsprobe`` command, for installs whose scripts folder is not on PATH
(a JetPack ``pip install --user`` often is not)."""

import sys

from dsprobe.cli import main

sys.exit(main())
