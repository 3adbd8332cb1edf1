"""The words a model reads: for each phase, for the one retry of a malformed answer, and for a
repair of code that failed verification."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence

from service.events import Verification
from service.generation.parsing import CLOSE, OPEN
from service.generation.phases import PHASES, Phase
from service.generation.providers import Prompt
from service.spec import Spec

SYSTEM = f"""You are a senior Python engineer generating a small web service, one phase at a time.
Answer ONLY with files, each in this exact block format, nothing between blocks:

{OPEN}relative/path/to/file.py>>>
<the complete file content>
{CLOSE}

Rules: paths are relative, use forward slashes, never '..'; write complete files, never
placeholders; use Python 3.11, Litestar and pydantic 2; keep every file under 200 KB."""

# Context budget: files made in earlier phases are shown whole up to this many characters.
CONTEXT_CHARS = 60_000


EARLIER = "Files already written in earlier phases"


def _context(files: Mapping[str, str], heading: str = EARLIER) -> str:
    if not files:
        return "No files exist yet."
    shown, used = [], 0
    for path, content in files.items():
        if used + len(content) > CONTEXT_CHARS:
            shown.append(f"{OPEN}{path}>>>\n(omitted: {len(content)} characters)\n{CLOSE}")
            continue
        used += len(content)
        shown.append(f"{OPEN}{path}>>>\n{content.rstrip()}\n{CLOSE}")
    return f"{heading}:\n\n" + "\n".join(shown)


def phase_prompt(spec: Spec, phase: Phase, files: Mapping[str, str]) -> Prompt:
    spec_json = json.dumps(spec.model_dump(mode="json", exclude_none=True), indent=2)
    user = (
        f"Project specification:\n{spec_json}\n\n"
        f"{_context(files)}\n\n"
        f"Phase {phase.number} of {len(PHASES)} ({phase.title}): write {phase.goal}.\n"
        "Answer with the file blocks of this phase only."
    )
    return Prompt(stage=phase.stage, system=SYSTEM, user=user, spec=spec, files=dict(files))


def repair_prompt(original: Prompt, answer: str, problem: str) -> Prompt:
    user = (
        f"{original.user}\n\nYour previous answer could not be used: {problem}.\n"
        f"Here it is:\n\n{answer[:CONTEXT_CHARS]}\n\n"
        "Answer again with the same files, strictly in the block format."
    )
    return Prompt(
        stage=original.stage,
        system=original.system,
        user=user,
        spec=original.spec,
        files=original.files,
    )


def repair_code_prompt(
    spec: Spec, files: Mapping[str, str], failed: Verification, *, round_: int
) -> Prompt:
    """Repair ``round_``: the project (the files the failing check names first, so they are
    shown whole within the budget), the check's reason and the tail of its output."""
    check = next((check for check in failed["checks"] if not check["ok"]), None)
    named = _files_named(check["failing"] if check else (), files)
    ordered = {path: files[path] for path in named} | dict(files)
    step = check["step"] if check else "verification"
    output = check["output"].strip() if check else ""
    spec_json = json.dumps(spec.model_dump(mode="json", exclude_none=True), indent=2)
    user = (
        f"Project specification:\n{spec_json}\n\n"
        f"{_context(ordered, 'The project as it stands')}\n\n"
        f"The project was checked and failed at the {step} step: {failed['summary']}\n"
        + (f"The end of the check's output:\n\n{output[-CONTEXT_CHARS:]}\n\n" if output else "")
        + f"Repair {round_}: correct the project so that it compiles, its app module "
        "app/main.py imports and its tests pass. Answer with the complete new content of every "
        "file you change, at its existing path (a new file only if one is missing); leave out "
        "the files you do not change."
    )
    return Prompt(stage="repair", system=SYSTEM, user=user, spec=spec, files=dict(files))


def _files_named(failing: Sequence[str], files: Mapping[str, str]) -> list[str]:
    """The stored files a check's ``failing`` entries name: paths as they are, tests by their
    module (``tests.test_order.test_total`` -> ``tests/test_order.py``)."""
    found: list[str] = []
    for entry in failing:
        candidates = [entry]
        parts = entry.split(".")
        candidates += ["/".join(parts[:end]) + ".py" for end in range(len(parts), 0, -1)]
        path = next((path for path in candidates if path in files), None)
        if path is not None and path not in found:
            found.append(path)
    return found
