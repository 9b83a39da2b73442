"""Problems found in rulesets and reference data, each naming the file, line and rule or field."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

# A problem as printed (lint, the reload_refused log event) is at most this many characters.
MAX_PROBLEM_CHARS = 1_000


@dataclass(frozen=True, slots=True)
class Problem:
    path: str
    line: int | None
    subject: str | None  # rule id, field or test name the problem is about
    message: str
    level: Literal["error", "warning"] = "error"

    def __str__(self) -> str:
        where = f"{self.path}:{self.line}" if self.line else self.path
        subject = f" {self.subject}:" if self.subject else ""
        prefix = "" if self.level == "error" else " warning:"
        text = f"{where}:{prefix}{subject} {self.message}"
        # bounded, whatever a hostile file puts in a rule id or an expression quoted in the message
        return text if len(text) <= MAX_PROBLEM_CHARS else text[: MAX_PROBLEM_CHARS - 1] + "…"


class ProblemsError(Exception):
    """Raised when a load is refused; carries every problem found, not just the first."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))
