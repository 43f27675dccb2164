"""Shim: `python scripts/analyze.py ...` is `evoprune analyze ...`."""
import sys

from evoprune.cli.commands import main

sys.exit(main(["analyze", *sys.argv[1:]]))
