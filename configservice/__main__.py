"""``python -m configservice token --gateway ID ...``: see :mod:`configservice._cli`."""

import sys

from ._cli import main

sys.exit(main())
