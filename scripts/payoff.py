"""Shim: `python scripts/payoff.py ...` is `evoprune payoff ...`."""
import sys

from evoprune.cli.commands import main

sys.exit(main(["payoff", *sys.argv[1:]]))
