"""`python -m evoprune` is the `evoprune` command."""

from __future__ import annotations

import sys

from evoprune.cli.commands import main

sys.exit(main())
