"""Shim: `python scripts/prune.py ...` is `evoprune prune ...`."""
import sys

from evoprune.cli.commands import main

sys.exit(main(["prune", *sys.argv[1:]]))
