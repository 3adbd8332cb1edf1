"""The one rule for a stored file (``service/files.py``), whoever wrote it: a model's answer
(its refusals in words: ``tests/generation/test_parsing.py``) or an import
(``tests/operations/test_transfer.py``)."""

from __future__ import annotations

import pytest

from service.files import MAX_FILE_BYTES, FileRefused, check_content, check_path, language_of
from service.generation.parsing import MalformedAnswer
from service.generation.parsing import check_path as check_answer_path


@pytest.mark.parametrize(
    "path",
    [
        "../../../../etc/x",
        "/etc/cron.d/evil",
        "..\\..\\evil.bat",
        ".env",
        "app/.git/config",
        "main.py\n",  # a '$' regex lets a trailing newline through: matched whole
        "app/-rf",
    ],
)
def test_a_path_outside_the_archive_or_hidden_is_refused_for_models_and_imports_alike(
    path: str,
) -> None:
    with pytest.raises(FileRefused) as refused:
        check_path(path)
    with pytest.raises(MalformedAnswer) as malformed:
        check_answer_path(path)

    assert str(malformed.value) == str(refused.value)


def test_a_content_with_a_nul_or_over_the_size_bound_is_refused() -> None:
    check_content("a.txt", "é" * (MAX_FILE_BYTES // 2))
    with pytest.raises(FileRefused, match="NUL"):
        check_content("a.txt", "a\x00b")
    with pytest.raises(FileRefused, match=f"larger than {MAX_FILE_BYTES} bytes"):
        check_content("a.txt", "é" * (MAX_FILE_BYTES // 2 + 1))


def test_the_language_is_the_extensions_whatever_its_case() -> None:
    assert [language_of(p) for p in ("a.PY", "b.yml", "Makefile")] == ["python", "yaml", "text"]
