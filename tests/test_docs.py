"""The README, ``make help`` and the tree agree: a newcomer who reads one finds the others."""

from __future__ import annotations

import re
import shutil
import subprocess

from service.settings import PROJECT_ROOT

README = (PROJECT_ROOT / "README.md").read_text()


def architecture_block() -> str:
    section = README.split("## Architecture", 1)[1]
    return section.split("```", 2)[1]


def test_every_service_module_is_in_the_readme_architecture_and_each_name_there_exists() -> None:
    block = architecture_block()
    service = PROJECT_ROOT / "service"
    modules: set[str] = set()
    for path in service.rglob("*.py"):
        parts = path.relative_to(service).parts
        if len(parts) > 3:  # deep inside a package: the README names the package
            modules.add(parts[2] + "/")
        elif path.name not in ("__init__.py", "__main__.py"):
            modules.add(path.name)
    named = set(re.findall(r"\b([a-z_]+\.py|[a-z_]+/)", block))
    assert modules - named == set(), "modules the README's architecture leaves out"
    named = {name for name in named if name.endswith(".py")}
    existing = {path.name for path in PROJECT_ROOT.rglob("*.py") if ".venv" not in path.parts}
    assert named - existing == set(), "names in the README's architecture with no file"
    for folder in re.findall(r"^  ([a-z_]+)/", block, flags=re.MULTILINE):
        assert (PROJECT_ROOT / "service" / folder).is_dir(), folder


def test_make_help_and_the_readme_name_the_same_targets() -> None:
    result = subprocess.run(
        [shutil.which("make") or "make", "--no-print-directory", "help"],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    targets = set(re.findall(r"^  make (\S+)", result.stdout, flags=re.MULTILINE))
    assert {"run", "test", "test-fast", "lint", "check", "bench"} <= targets
    mentioned = set(re.findall(r"`make ([a-z-]+)`", README)) | set(
        re.findall(r"`([a-z-]+)`", README.split("`make help` lists the other targets", 1)[1][:400])
    )
    assert targets - {"help"} <= mentioned, "targets the README never names"
    assert {name for name in re.findall(r"`make ([a-z-]+)`", README)} <= targets
