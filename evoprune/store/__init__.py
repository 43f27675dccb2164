"""What a study storage holds and how it is opened: `storage` (open, lock, reap, retry),
`schema` (the typed records of every study and trial attribute), `optuna_compat` (the Optuna
internals touched, checked against tested versions), `recipes` (recipe specs a user types,
`study:NAME:TRIAL` among them).

May import: `evoprune.core`, `evoprune.errors`.
"""

from __future__ import annotations
