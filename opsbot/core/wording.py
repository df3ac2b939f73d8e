"""Counted nouns in answers: "1 replica", "5 replicas" (never "1 replicas").

In core so that manifests, commands and the console can share it (they may not import opsbot.chat).
"""

from __future__ import annotations


def count(n: int, word: str, many: str | None = None) -> str:
    """`n` and the noun in the right number; `many` for irregular plurals."""
    return f"{n} {word if n == 1 else (many or word + 's')}"


def replicas(n: int) -> str:
    return count(n, "replica")
