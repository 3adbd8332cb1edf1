"""Schemathesis hooks for ``tests/api/test_conformance.py`` (loaded by the CLI through
``SCHEMATHESIS_HOOKS``).

One check replaces schemathesis' ``positive_data_acceptance``: a request the schema allows must
be accepted, except when the service refuses it for a rule that JSON Schema cannot state, and
only for those rules, each recognised by the service's own words:

- a cursor is opaque: any text of its alphabet fits the schema, only the ones issued decode;
- a spec's names must not be Python keywords, ``id`` is reserved, and a field's type may name
  only an entity of the same spec, whose names and modules must not clash.
"""

from __future__ import annotations

import keyword
import re
from typing import Any

import schemathesis
from schemathesis.specs.openapi.checks import positive_data_acceptance

CURSOR = "invalid cursor: pass back next_cursor exactly as received"
SPEC_RULES = (
    re.compile(r"is reserved \(every entity gets its own id\)"),
    re.compile(r"nor an entity of this spec"),
    re.compile(r"duplicate entity names"),
    re.compile(r"would share the module name"),
)
NOT_AN_IDENTIFIER = re.compile(r"'([^']*)' is not a valid Python identifier")


def unexpressible(detail: str) -> bool:
    """Whether a 400's detail names only a rule the schema cannot state."""
    if detail == CURSOR:
        return True
    if any(rule.search(detail) for rule in SPEC_RULES):
        return True
    names = NOT_AN_IDENTIFIER.findall(detail)
    return bool(names) and all(keyword.iskeyword(name) for name in names)


@schemathesis.check
def positive_data_accepted(ctx: Any, response: Any, case: Any) -> bool | None:
    if response.status_code == 400:
        body = response.json()
        if isinstance(body, dict) and unexpressible(str(body.get("detail", ""))):
            return None
    return positive_data_acceptance(ctx, response, case)
