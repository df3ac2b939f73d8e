"""`python -m opsbot` is the `opsbot` command."""

import sys

from opsbot.cli import main

sys.exit(main())
