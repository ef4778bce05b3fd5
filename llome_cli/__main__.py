"""``python -m llome_cli``: the ``llome`` command."""

import sys

from llome_cli import main

sys.exit(main())
