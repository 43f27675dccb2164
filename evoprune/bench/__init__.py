"""Benchmarks (`evoprune bench NAME`): each compares two things in one run and prints the ratio,
the machine and the sizes (`suite`).

May import: `evoprune.experiments` and everything below it.
"""

from __future__ import annotations
