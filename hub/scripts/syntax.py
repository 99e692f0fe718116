"""Where a script's syntax error is: quickjs decides (it runs the script) and gives the line;
esprima gives the column.

The quickjs engine bundled with the `quickjs` package reports a syntax error's line only
("at <input>:3"). esprima (a port of esprima.js, ES2017) reports line and column; when it
finds its error on the line quickjs named, its column is the answer. Otherwise (syntax newer
than ES2017, which quickjs accepts) the column is unknown and stays None.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class SyntaxProblem:
    message: str
    line: int
    column: int | None

    def __str__(self) -> str:
        where = f"line {self.line}" + (f", column {self.column}" if self.column is not None else "")
        return f"{where}: {self.message}"


def locate(code: str, message: str, line: int) -> SyntaxProblem:
    """The full position of a syntax error quickjs found at `line`."""
    # Imported here, on the first syntax error: esprima costs ~120 MB and 0.45 s to import,
    # which an idle hub (and every script that compiles) should not pay.
    import esprima

    column: int | None = None
    try:
        esprima.parseScript(code)
    except esprima.Error as error:
        if error.lineNumber == line and isinstance(error.column, int):
            column = error.column
    except RecursionError:   # a pathological nesting: the line is all we know
        pass
    return SyntaxProblem(message, line, column)
