"""KflError: the one exception the KFL parser and compiler raise."""

from __future__ import annotations


class KflError(ValueError):
    """An invalid query: `message` says what was expected, `column` (1-based, counted in
    characters from the start of the query) says where. str() is "column N: message"."""

    def __init__(self, message: str, column: int) -> None:
        super().__init__(message, column)
        self.message = message
        self.column = column

    def __str__(self) -> str:
        return f"column {self.column}: {self.message}"
