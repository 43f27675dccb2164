"""`python -m evoprune` is the `evoprune` command."""

import sys

from evoprune.cli import main

sys.exit(main())
