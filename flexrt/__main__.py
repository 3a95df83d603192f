"""`python -m flexrt`: the same as the `flexrt` command."""

import sys

from flexrt.cli import main

sys.exit(main())
