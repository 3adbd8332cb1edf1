"""The words a model reads for each phase, and for the one repair attempt."""

from __future__ import annotations

import json
from collections.abc import Mapping

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


def _context(files: Mapping[str, str]) -> str:
    if not files:
        return "No files exist yet."
    shown, used = [], 0
    for path, content in files.items():
        if used + len(content) > CONTEXT_CHARS:
            shown.append(f"{OPEN}{path}>>>\n(omitted: {len(content)} characters)\n{CLOSE}")
            continue
        used += len(content)
        shown.append(f"{OPEN}{path}>>>\n{content.rstrip()}\n{CLOSE}")
    return "Files already written in earlier phases:\n\n" + "\n".join(shown)


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
