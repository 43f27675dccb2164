"""What every layer shares and nothing else owns: configuration trees (`config`), typed progress
events (`events`), the machine and its precision (`machine`), checkpoint files (`checkpoint`).

May import: `evoprune.errors` only. Imported by every other package.
"""

from __future__ import annotations
