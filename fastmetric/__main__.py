"""``python -m fastmetric``: the same as the ``fastmetric`` command."""

import sys

from .cli import main

sys.exit(main())
