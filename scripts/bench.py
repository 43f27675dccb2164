"""Shim: `python scripts/bench.py cost ...` is `evoprune bench cost ...`."""
import sys

from evoprune.cli.commands import main

sys.exit(main(["bench", *sys.argv[1:]]))
