"""``python -m vlpart.apps.cli``: the ``vlpart`` command."""

import sys

from vlpart.apps.cli import main

sys.exit(main())
