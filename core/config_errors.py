"""What is wrong with a tenants file: one `ConfigProblem` per mistake, all raised together."""

from __future__ import annotations

from pydantic import BaseModel


class ConfigProblem(BaseModel):
    """`file:line:column: what is wrong (the bad value) — how to fix it`, plus the line itself when it helps."""

    file: str
    line: int
    column: int = 1
    message: str
    excerpt: str = ""

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.column}: {self.message}"

    def with_excerpt(self) -> str:
        return f"{self}\n{self.excerpt}" if self.excerpt else str(self)


class ConfigError(Exception):
    """The tenants file is invalid; `problems` says where and how to fix each issue, in file order."""

    def __init__(self, problems: list[ConfigProblem]) -> None:
        self.problems = sorted(problems, key=lambda p: (p.file, p.line, p.column))
        super().__init__("\n".join(str(p) for p in self.problems))
