"""Shim: `python scripts/reproduce.py ...` is `evoprune reproduce ...`."""
import sys

from evoprune.cli.commands import main

sys.exit(main(["reproduce", *sys.argv[1:]]))
