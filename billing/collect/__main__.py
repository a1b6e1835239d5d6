"""`python3 -m billing.collect`: run the collector."""

import sys

from .cli import main

sys.exit(main())
