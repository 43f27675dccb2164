"""Shim: `python scripts/search.py ...` is `evoprune search ...`."""
import sys

from evoprune.cli.commands import main

sys.exit(main(["search", *sys.argv[1:]]))
