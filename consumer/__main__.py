"""`python -m consumer` is `erasure-worker`."""

import sys

from consumer.cli import main

sys.exit(main())
