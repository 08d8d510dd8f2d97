"""`python -m batching`: the operator CLI (see batching/cli.py)."""

import sys

from batching.cli import main

sys.exit(main())
