"""SQL written with named parameters (``:name``), numbered for asyncpg (``$n``) once, at import.

asyncpg only knows ``$1 .. $n``; a statement with twenty of them cannot be read without
counting. Writing ``:fence`` instead, and numbering from the field order of the statement's
parameter record (a NamedTuple), keeps the SQL readable and the call site exact: the record is
built by keyword, and its fields are the parameters in order. The text sent to PostgreSQL is
the same as if written by hand, so nothing changes at run time.

What is not a parameter: ``::`` casts, and anything inside '...' literals, "..." identifiers
and ``--`` comments. Dollar-quoted and E'...' strings are not understood; no query uses them.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

# One alternation, scanned left to right: literals, quoted identifiers, comments and casts are
# consumed whole, so a colon inside them can never start a name.
_TOKEN = re.compile(
    r"""
    '(?:[^']|'')*'              # a string literal ('HH24:MI:SS')
    | "(?:[^"]|"")*"            # a quoted identifier
    | --[^\n]*                  # a comment
    | ::                        # a cast
    | :(?P<name>[A-Za-z_]\w*)   # a parameter
    """,
    re.VERBOSE,
)


def numbered(sql: str, names: Sequence[str]) -> str:
    """``sql`` with each ``:name`` replaced by ``$n``, n being the name's place in ``names``
    (counted from 1). Raises ValueError on a name not in ``names``, and on one never used:
    either means the SQL and its parameter record have drifted apart."""
    number = {name: index for index, name in enumerate(names, start=1)}
    used: set[str] = set()

    def replace(match: re.Match[str]) -> str:
        name = match["name"]
        if name is None:
            return match[0]
        if name not in number:
            raise ValueError(f"unknown parameter :{name} (parameters: {', '.join(names)})")
        used.add(name)
        return f"${number[name]}"

    text = _TOKEN.sub(replace, sql)
    if unused := [name for name in names if name not in used]:
        raise ValueError(f"parameters never used in the SQL: {', '.join(unused)}")
    return text
