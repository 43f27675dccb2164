"""Shim: `python scripts/retrain.py ...` is `evoprune retrain ...`."""
import sys

from evoprune.cli.commands import main

sys.exit(main(["retrain", *sys.argv[1:]]))
