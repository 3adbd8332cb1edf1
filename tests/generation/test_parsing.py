"""The answer format's parser: round trips, ignored chatter, and every refusal it promises."""

from __future__ import annotations

import pytest

from service.events import NewFile
from service.files import MAX_FILE_BYTES, MAX_PATH_CHARS, language_of
from service.generation.parsing import (
    CLOSE,
    MAX_FILES,
    OPEN,
    MalformedAnswer,
    check_path,
    parse_answer,
    render_block,
)


def block(path: str, content: str) -> str:
    return render_block(NewFile(path, content, language_of(path)))


def refusal(text: str) -> str:
    with pytest.raises(MalformedAnswer) as caught:
        parse_answer(text)
    return str(caught.value)


FILES = [
    NewFile("pyproject.toml", '[project]\nname = "shop"\n', "toml"),
    NewFile(
        "app/models/user.py",
        "class User:\n\n\n    email: str   \n\n    age: int\t\n\n",  # blank lines, trailing blanks
        "python",
    ),
    NewFile("README.md", "# Café ☕ 東京\n\nÉmoji: 🚀 — naïve résumé\n", "markdown"),
    NewFile(
        "scripts/run.sh",
        "cat <<<EOF\nx = a <<< b\n  <<<<<<< HEAD\nvalue >>> other\n<<<\n",  # '<<<' inside lines
        "shell",
    ),
    NewFile("tests/test_user.py", "\n\nassert True\n", "python"),  # leading blank lines
]


def test_rendered_blocks_parse_back_to_the_same_files_in_order() -> None:
    answer = "".join(render_block(file) for file in FILES)

    parsed = parse_answer(answer)

    assert parsed.files == tuple(FILES)


def test_content_without_final_newline_comes_back_with_exactly_one_added() -> None:
    parsed = parse_answer(block("a.py", "x = 1") + block("b.py", "y = 2  "))

    assert [file.content for file in parsed.files] == ["x = 1\n", "y = 2  \n"]


def test_crlf_inside_content_is_kept_verbatim() -> None:
    content = "line one\r\nline two\r\n"

    parsed = parse_answer(block("notes.txt", content))

    assert parsed.files == (NewFile("notes.txt", content, "text"),)


def test_an_answer_written_with_crlf_line_ends_is_understood() -> None:
    # Some models answer with CRLF line ends: the markers still count, the content is kept.
    answer = block("a.py", "x = 1\n").replace("\n", "\r\n")

    parsed = parse_answer(answer)

    assert parsed.files == (NewFile("a.py", "x = 1\r\n", "python"),)


def test_chatter_before_between_and_after_blocks_is_ignored() -> None:
    answer = (
        "Sure! Here are the files you asked for.\n\n"
        + block("a.py", "a = 1\n")
        + "\nAnd now the second one:\n"
        + block("b/c.py", "c = 3\n")
        + "\nLet me know if you need anything else.\n"
    )

    parsed = parse_answer(answer)

    assert parsed.files == (
        NewFile("a.py", "a = 1\n", "python"),
        NewFile("b/c.py", "c = 3\n", "python"),
    )


def test_chatter_that_mentions_the_marker_mid_line_is_ignored() -> None:
    # The docstring promises that text outside blocks is ignored; a sentence naming the format
    # is not a block (a block's marker starts its own line).
    answer = f"I will wrap each file in {OPEN}path>>> … {CLOSE} as asked.\n" + block(
        "a.py", "a = 1\n"
    )

    parsed = parse_answer(answer)

    assert [file.path for file in parsed.files] == ["a.py"]


def test_spaces_around_the_path_and_after_the_markers_are_tolerated() -> None:
    answer = f"{OPEN}  app/main.py  >>>  \nprint('hi')\n{CLOSE}\t \n"

    parsed = parse_answer(answer)

    assert parsed.files == (NewFile("app/main.py", "print('hi')\n", "python"),)


def test_an_answer_without_blocks_is_refused() -> None:
    message = refusal("I cannot help with that, sorry.\n")

    assert "no file blocks" in message


def test_an_empty_answer_is_refused() -> None:
    assert "no file blocks" in refusal("")


def test_an_unterminated_block_is_refused() -> None:
    message = refusal(f"{OPEN}a.py>>>\nx = 1\n")

    assert f"found 1 '{OPEN.strip()}" in message
    assert f"0 '{CLOSE}' lines" in message
    assert "0 complete blocks" in message


def test_an_unterminated_block_after_a_complete_one_is_refused() -> None:
    message = refusal(block("a.py", "a = 1\n") + f"{OPEN}b.py>>>\nb = 2\n")

    assert "found 2" in message
    assert "1 complete blocks" in message


def test_an_unterminated_block_before_a_complete_one_is_refused() -> None:
    # Otherwise the first block would swallow the second as its content.
    message = refusal(f"{OPEN}a.py>>>\na = 1\n" + block("b.py", "b = 2\n"))

    assert "found 2" in message
    assert "1 complete blocks" in message


def test_a_stray_end_line_is_refused() -> None:
    message = refusal(block("a.py", "a = 1\n") + f"{CLOSE}\n")

    assert f"2 '{CLOSE}' lines" in message
    assert "1 complete blocks" in message


def test_content_with_an_end_line_of_its_own_is_refused_not_truncated() -> None:
    message = refusal(block("a.py", f"x = 1\n{CLOSE}\ny = 2\n"))

    assert f"2 '{CLOSE}' lines" in message


def test_an_open_marker_not_on_its_own_line_is_refused() -> None:
    message = refusal(f"Here: {OPEN}a.py>>>\nx = 1\n{CLOSE}\n")

    assert "each on its own line" in message


def test_a_path_with_a_newline_in_its_marker_is_refused() -> None:
    message = refusal(f"{OPEN}a\nb.py>>>\nx = 1\n{CLOSE}\n")

    assert "0 complete blocks" in message


def test_a_duplicate_path_is_refused() -> None:
    message = refusal(block("a.py", "a = 1\n") + block("a.py", "a = 2\n"))

    assert "'a.py' appears twice" in message


def test_a_duplicate_path_spelled_with_extra_spaces_is_refused() -> None:
    message = refusal(block("a.py", "a = 1\n") + f"{OPEN} a.py >>>\na = 2\n{CLOSE}\n")

    assert "appears twice" in message


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/etc/passwd", "must be relative"),
        ("/app/main.py", "must be relative"),
        ("app\\main.py", "forward slashes"),
        ("..\\evil.py", "forward slashes"),
        ("../evil.py", "'..' segment"),
        ("app/../../evil.py", "'..' segment"),
        ("app/..", "'..' segment"),
        ("..", "'..' segment"),
        ("./app.py", "'.' or '..' segment"),
        ("app/./main.py", "'.' or '..' segment"),
        ("app//main.py", "empty, '.' or '..' segment"),
        ("app/", "empty, '.' or '..' segment"),
        ("my file.py", "may only use letters, digits"),
        ("~/x.py", "may only use letters, digits"),
        ("app/~backup.py", "may only use letters, digits"),
        ("café.py", "may only use letters, digits"),
        ("app/módulo.py", "may only use letters, digits"),
        ("a\x00b.py", "may only use letters, digits"),
        ("a:b.py", "may only use letters, digits"),
        ("a*.py", "may only use letters, digits"),
        ("$HOME/x.py", "may only use letters, digits"),
        ("-rf", "may only use letters, digits"),
        (".env", "may only use letters, digits"),
        (".git/config", "may only use letters, digits"),
        ("...", "may only use letters, digits"),
        ("x" * (MAX_PATH_CHARS + 1), f"longer than {MAX_PATH_CHARS}"),
        ("a/" * 100 + "b", f"longer than {MAX_PATH_CHARS}"),
    ],
)
def test_a_bad_path_is_refused_with_the_reason(path: str, expected: str) -> None:
    with pytest.raises(MalformedAnswer, match="file path") as caught:
        check_path(path)
    assert expected in str(caught.value)

    # The same refusal comes out of a whole answer (the NUL path would survive the marker too).
    message = refusal(f"{OPEN}{path}>>>\nx = 1\n{CLOSE}\n")
    assert expected in message


@pytest.mark.parametrize("path", ["app/main.py\n", "main.py\n/x.py", "a.py\r"])
def test_a_path_ending_a_segment_with_a_line_break_is_refused(path: str) -> None:
    """A marker cannot carry one, but check_path also judges paths from elsewhere (imports):
    a `$`-anchored match() let a final newline through."""
    with pytest.raises(MalformedAnswer, match="may only use letters, digits"):
        check_path(path)


def test_an_empty_path_is_refused() -> None:
    with pytest.raises(MalformedAnswer, match="empty"):
        check_path("")
    assert "empty" in refusal(f"{OPEN}   >>>\nx = 1\n{CLOSE}\n")


@pytest.mark.parametrize(
    "path",
    [
        "a.py",
        "pyproject.toml",
        "app/__init__.py",
        "app/models/order_item.py",
        "tests/api/test-orders.py",
        "_private/x.y.z",
        "Makefile",
        "docs/v1.2/notes.md",
        "a" * MAX_PATH_CHARS,
        "/".join(["d"] * 99) + "/f",  # deep, but within the length bound
    ],
)
def test_normal_paths_are_accepted_unchanged(path: str) -> None:
    assert check_path(path) == path
    assert [file.path for file in parse_answer(block(path, "x\n")).files] == [path]


@pytest.mark.parametrize(
    "path",
    [
        "app/.env",  # a hidden file: '.env' alone is refused, one level down it is not
        "app/.git/config",  # a nested repository's config (core.fsmonitor runs commands)
        "app/.ssh/authorized_keys",
        "app/-rf",  # an option-like name: '-rf' alone is refused, one level down it is not
        "app/--help.py",
    ],
)
def test_hidden_and_option_like_segments_are_refused_at_any_depth(path: str) -> None:
    # The first character of a path may not be '.' or '-'; the same must hold for every
    # segment, or the rule only guards the top level of the archive.
    with pytest.raises(MalformedAnswer):
        check_path(path)


def test_paths_differing_only_in_case_are_refused_as_duplicates() -> None:
    # In the zip archive both would land on the same file on case-insensitive filesystems.
    message = refusal(block("app/User.py", "a = 1\n") + block("app/user.py", "a = 2\n"))

    assert "twice" in message


def test_a_file_whose_path_is_another_files_directory_is_refused() -> None:
    # The archive could not be extracted: 'app' cannot be both a file and a directory.
    with pytest.raises(MalformedAnswer):
        parse_answer(block("app", "a = 1\n") + block("app/main.py", "a = 2\n"))


def test_a_file_at_the_byte_limit_is_accepted_though_multibyte() -> None:
    content = "é" * ((MAX_FILE_BYTES - 2) // 2) + "a\n"
    assert len(content.encode()) == MAX_FILE_BYTES

    parsed = parse_answer(block("big.txt", content))

    assert parsed.files[0].content == content
    assert parsed.files[0].size == MAX_FILE_BYTES


def test_a_file_over_the_byte_limit_is_refused_though_it_has_fewer_characters() -> None:
    content = "é" * (MAX_FILE_BYTES // 2) + "\n"
    assert len(content) < MAX_FILE_BYTES < len(content.encode())

    message = refusal(block("a.py", "ok\n") + block("big.txt", content))

    assert "'big.txt' is larger than" in message
    assert str(MAX_FILE_BYTES) in message


def test_the_maximum_number_of_files_is_accepted() -> None:
    answer = "".join(block(f"f{i}.py", f"x = {i}\n") for i in range(MAX_FILES))

    assert len(parse_answer(answer).files) == MAX_FILES


def test_one_file_more_than_the_maximum_is_refused() -> None:
    answer = "".join(block(f"f{i}.py", f"x = {i}\n") for i in range(MAX_FILES + 1))

    message = refusal(answer)

    assert f"more than {MAX_FILES} files" in message


@pytest.mark.parametrize(
    ("path", "language"),
    [
        ("app/main.py", "python"),
        ("pyproject.toml", "toml"),
        ("README.md", "markdown"),
        ("APP/MAIN.PY", "python"),
        ("config.yml", "yaml"),
        ("Makefile", "text"),
        ("data.unknownext", "text"),
        ("archive.tar.gz", "text"),
    ],
)
def test_language_follows_the_extension(path: str, language: str) -> None:
    assert language_of(path) == language


def test_parsed_files_carry_their_language() -> None:
    answer = block("a.py", "x\n") + block("b.toml", "x\n") + block("c.md", "x\n") + block("d", "x")

    assert [file.language for file in parse_answer(answer).files] == [
        "python",
        "toml",
        "markdown",
        "text",
    ]


def test_render_block_puts_each_marker_on_its_own_line() -> None:
    assert render_block(NewFile("a.py", "x = 1", "python")) == f"{OPEN}a.py>>>\nx = 1\n{CLOSE}\n"
    assert render_block(NewFile("a.py", "x = 1\n", "python")) == f"{OPEN}a.py>>>\nx = 1\n{CLOSE}\n"
