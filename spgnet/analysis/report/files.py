"""Reading the result files of one report: cached JSON reads, every absent file recorded once."""

from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass, field
from pathlib import Path

from spgnet.config import PROJECT_ROOT


@dataclass
class Problems:
    """Missing or unreadable files, in the order the report meets them (document order)."""

    items: list[str] = field(default_factory=list)

    def add(self, text: str) -> str:
        if text not in self.items:
            self.items.append(text)
        return text


def _show(path: Path) -> str:
    """A path as the report prints it: relative to the project root when under it."""
    path = Path(path)
    with contextlib.suppress(ValueError):
        return str(path.resolve().relative_to(PROJECT_ROOT.resolve()))
    return str(path)


class ResultFiles:
    """Cached JSON reads under the results folder; every absent file is recorded once."""

    def __init__(self, plan, root: Path, problems: Problems):
        self.plan, self.root, self.problems = plan, Path(root), problems
        self._cache: dict[Path, tuple] = {}

    def path(self, plan_path: str) -> Path:
        """``plan_path`` (``results/<profile>/...``) under this report's results folder."""
        return self.root / Path(plan_path).relative_to(self.plan.results)

    def read(self, path: Path) -> tuple[dict | None, str | None]:
        """(data, None) or (None, "missing: <path>" / "unreadable: <path> (...)")."""
        if path not in self._cache:
            if not path.is_file():
                self._cache[path] = (None, f"missing: {_show(path)}")
            else:
                try:
                    self._cache[path] = (json.loads(path.read_text(encoding="utf-8")), None)
                except (OSError, ValueError) as err:
                    self._cache[path] = (None, f"unreadable: {_show(path)} ({type(err).__name__})")
        data, problem = self._cache[path]
        if problem:
            self.problems.add(problem)
        return data, problem
