"""The example host's hooks: a small text pipeline that plugins extend."""

from __future__ import annotations

from typing import Any

import helixhooks as hh


class TextPipelineSpec:
    """What the example plugins may do."""

    @hh.hookspec
    def tokenize(self, text: str) -> list[str]:
        """Split text into tokens."""

    @hh.hookspec
    def analyze(self, text: str) -> dict[str, Any]:
        """Score a text."""

    @hh.hookspec
    def report(self, text: str) -> str:
        """Describe a text for people."""

    @hh.hookspec
    def report_ready(self, report: str) -> None:
        """Told about every finished report."""

    @hh.hookspec
    def greet(self, name: str) -> str:
        """Say hello."""

    @hh.hookspec
    def count_words(self, text: str) -> int:
        """Count the words of a text."""
