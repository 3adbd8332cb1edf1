"""``service/web/highlight.js`` alone, in a real Chromium, on a page of the service's origin
with nothing else on it: every text comes back whole in every language, and Python's tokens
are what they say they are."""

from __future__ import annotations

from typing import Any

import pytest
from playwright.async_api import Page

from tests.conftest import RunningApp
from tests.web.browser import blank_page
from tests.web.generated import generate_via_api

pytestmark = pytest.mark.slow

LANGUAGES = ["python", "toml", "markdown", "json", "yaml", "ini", "sql", "shell", "text", "cobol"]

TOKENS = """async ([text, language]) => {
    const { tokens } = await import("/static/highlight.js");
    return tokens(text, language);
}"""

# Every text in every language: the failures, each saying what went wrong. A token list must
# join to the text, hold no empty token, never put two tokens of one kind side by side, and
# use only the kinds highlight.js names. The page adds texts a JSON argument cannot carry
# (lone surrogates) and a few thousand random ones made of the characters scanners trip on.
ROUND_TRIPS = """async ([texts, languages, fuzzed]) => {
    const { tokens } = await import("/static/highlight.js");
    const KINDS = new Set(
        ["", "keyword", "string", "comment", "number", "def", "builtin", "decorator"]);
    const all = Object.entries(texts);
    all.push(["lone surrogates", "a\\ud800b'\\udc00\\n\\"\\ud83d", ]);
    let seed = 20260101; // mulberry32: the same texts on every run
    const random = () => {
        seed = (seed + 0x6d2b79f5) | 0;
        let t = Math.imul(seed ^ (seed >>> 15), 1 | seed);
        t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
        return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
    };
    const alphabet = [..."'\\"\\\\{}[]()#@:!=.,-*_`~$&|>;\\r\\n\\t fFrRbBx01e9_",
        "\\"\\"\\"", "'''", "```", "f'{", "match ", "case ", "def ", "é", "😀", "\\u2028"];
    for (let n = 0; n < fuzzed; n++) {
        let text = "";
        const length = Math.floor(random() * 60);
        for (let i = 0; i < length; i++) text += alphabet[Math.floor(random() * alphabet.length)];
        all.push([`random ${n}`, text]);
    }
    const failures = [];
    for (const [name, text] of all) {
        for (const language of languages) {
            const list = tokens(text, language);
            const joined = list.map(([, piece]) => piece).join("");
            const why = joined !== text ? "does not join to the text"
                : list.some(([, piece]) => piece === "") ? "has an empty token"
                : list.some(([kind], i) => i > 0 && list[i - 1][0] === kind) ? "repeats a kind"
                : list.some(([kind]) => !KINDS.has(kind)) ? "has an unknown kind" : null;
            if (why) failures.push({ name, language, why, text: text.slice(0, 200) });
        }
    }
    return { checked: all.length * languages.length, failures: failures.slice(0, 10) };
}"""

NASTY = {
    "empty": "",
    "one newline": "\n",
    "unterminated single": "s = 'abc\nx = 1\n",
    "unterminated double at the end": 'x = "abc',
    "unterminated triple": '"""abc\nx = 1\n',
    "unterminated f-string field": 'f"{x\ny = 2\n',
    "unterminated f-string at the end": "f'{",
    "format spec at the end": 'f"{x:>{',
    "backslash at the end": "'\\",
    "backslash CRLF in a string": "s = 'a\\\r\nb'\r\n",
    "nested quotes": 'a = "it\'s" + \'say "hi"\' + f"{d["k"]!r:>{w}}" + '
    "'''x\"y''' + \"\"\"'\"\"\"\n",
    "f-strings nested deep": "f'{" * 40 + "x" + "}'" * 40,
    "f-strings unclosed deep": 'f"{f"{f"{f"{' * 30,
    "CRLF": "def f():\r\n    return 'x'  # c\r\n\r\n@d\r\nclass C: pass\r\n",
    "lone CR": "a = 1\rb = 'x\rc'\r",
    "tabs": "\tif x:\n\t\treturn\t'\t'\n",
    "unicode": "名前 = 'héllo 😀'  # ünïcode\nπ = 3.14\nclass Ωmega: pass\n\u2028\u00a0\ufeff",
    "markdown fence unclosed": "# T\n```python\ndef f(:\n",
    "markdown fences nested": "````markdown\n```python\nx\n```\n````\n",
    "toml unterminated": 'a = """x\nb = \'y\n[t',
    "json broken": '{"a": "b\\", 1e, tru, [}',
    "sql unterminated": "select 'x from t /* c",
    "shell unterminated": "echo \"$X ${Y\n'z",
    "only punctuation": "(){}[]:;,.@!#$%^&*-+=<>?/\\|`~",
}


async def tokens(page: Page, text: str, language: str = "python") -> list[list[str]]:
    result: list[list[str]] = await page.evaluate(TOKENS, [text, language])
    return result


def colored(token_list: list[list[str]]) -> list[tuple[str, str]]:
    """The tokens that have a kind, as (kind, text)."""
    return [(kind, text) for kind, text in token_list if kind]


async def test_every_generated_file_and_every_nasty_text_comes_back_whole_in_every_language(
    running: RunningApp, api_key: str, page: Page
) -> None:
    generated = await generate_via_api(running, api_key)
    languages = {file.language for file in generated.files.values()}
    assert {"python", "toml", "markdown"} <= languages, languages
    await blank_page(page, running)
    texts = {f"generated {path}": file.text for path, file in generated.files.items()}
    result: dict[str, Any] = await page.evaluate(ROUND_TRIPS, [texts | NASTY, LANGUAGES, 3000])
    assert result["failures"] == []
    assert result["checked"] == (len(texts) + len(NASTY) + 1 + 3000) * len(LANGUAGES)
    for path, file in generated.files.items():  # each in its own language, coloured
        listed = await tokens(page, file.text, file.language)
        assert "".join(text for _, text in listed) == file.text
        if file.language != "text" and file.text.strip():
            assert colored(listed), path


async def test_the_empty_text_has_no_tokens_and_an_unknown_language_is_one_plain_token(
    running: RunningApp, page: Page
) -> None:
    await blank_page(page, running)
    assert await tokens(page, "", "python") == []
    assert await tokens(page, "def f(): pass\n", "text") == [["", "def f(): pass\n"]]
    assert await tokens(page, "x = 1\n", "cobol") == [["", "x = 1\n"]]
    assert await tokens(page, "x = 1\n", "PY") == [["", "x = "], ["number", "1"], ["", "\n"]]


async def test_python_names_keywords_builtins_and_definitions(
    running: RunningApp, page: Page
) -> None:
    await blank_page(page, running)
    source = (
        "@app.get('/x')\n"
        "async def handler(request):\n"
        "    print(len(request), obj.list, True)\n"
        "class Foo(Base): pass\n"
        "def print(): ...\n"
        "x = a @ b\n"
    )
    assert colored(await tokens(page, source)) == [
        ("decorator", "@app.get"),
        ("string", "'/x'"),
        ("keyword", "async"),
        ("keyword", "def"),
        ("def", "handler"),
        ("builtin", "print"),
        ("builtin", "len"),  # obj.list: an attribute, not the builtin
        ("keyword", "True"),
        ("keyword", "class"),
        ("def", "Foo"),
        ("keyword", "pass"),
        ("keyword", "def"),
        ("def", "print"),  # the name being defined, though a builtin's
    ]  # a @ b: the operator, not a decorator


async def test_python_strings_comments_and_numbers(running: RunningApp, page: Page) -> None:
    await blank_page(page, running)
    source = (
        "s = 'it\\'s' + r\"a\\\"b\" + rb'\\\\' + Rb\"x\" + u'y'  # it's \"quoted\" 'too'\n"
        'doc = """one\n"two" \'\'\'\nthree"""\n'
        "n = 0x1F + 0o17 + 0b1_0 + 1_000 + 1e-3 + 2.5E+10 + .5 + 3. + 2j\n"
    )
    assert colored(await tokens(page, source)) == [
        ("string", "'it\\'s'"),
        ("string", 'r"a\\"b"'),
        ("string", "rb'\\\\'"),
        ("string", 'Rb"x"'),
        ("string", "u'y'"),
        ("comment", "# it's \"quoted\" 'too'"),
        ("string", '"""one\n"two" \'\'\'\nthree"""'),
        ("number", "0x1F"),
        ("number", "0o17"),
        ("number", "0b1_0"),
        ("number", "1_000"),
        ("number", "1e-3"),
        ("number", "2.5E+10"),
        ("number", ".5"),
        ("number", "3."),
        ("number", "2j"),
    ]


async def test_python_f_strings_are_strings_around_code(running: RunningApp, page: Page) -> None:
    await blank_page(page, running)
    assert await tokens(page, 'f"a{x + 1}b{{c}}"') == [
        ["string", 'f"a'],
        ["", "{x + "],
        ["number", "1"],
        ["", "}"],
        ["string", 'b{{c}}"'],
    ]
    # Python 3.12's nested quotes, a conversion, a format spec with a field of its own.
    assert await tokens(page, 'F"{d["k"]!r:>{width}} {len(s)=}"') == [
        ["string", 'F"'],
        ["", "{d["],
        ["string", '"k"'],
        ["", "]!r:"],
        ["string", ">"],
        ["", "{width}}"],
        ["string", " "],
        ["", "{"],
        ["builtin", "len"],
        ["", "(s)=}"],
        ["string", '"'],
    ]
    assert await tokens(page, "rf'''{a}\n\\d'''") == [
        ["string", "rf'''"],
        ["", "{a}"],
        ["string", "\n\\d'''"],
    ]


async def test_unterminated_strings_stop_where_python_stops_them(
    running: RunningApp, page: Page
) -> None:
    await blank_page(page, running)
    assert await tokens(page, "s = 'abc\nx = 1\n") == [
        ["", "s = "],
        ["string", "'abc"],
        ["", "\nx = "],
        ["number", "1"],
        ["", "\n"],
    ]
    assert await tokens(page, 's = "a\\\nb"\n') == [
        ["", "s = "],
        ["string", '"a\\\nb"'],
        ["", "\n"],
    ]
    assert await tokens(page, '"""abc\nx = 1\n') == [["string", '"""abc\nx = 1\n']]
    assert await tokens(page, 'f"{x\ny = 2\n') == [
        ["string", 'f"'],
        ["", "{x\ny = "],
        ["number", "2"],
        ["", "\n"],
    ]
    assert await tokens(page, "a = 'x\r\nb") == [["", "a = "], ["string", "'x"], ["", "\r\nb"]]


async def test_match_and_case_are_keywords_only_where_they_start_a_block(
    running: RunningApp, page: Page
) -> None:
    await blank_page(page, running)
    statement = (
        "match command.split():\n    case [x, *rest] if x:\n        pass\n    case _:  # c\n"
    )
    assert colored(await tokens(page, statement)) == [
        ("keyword", "match"),
        ("keyword", "case"),
        ("keyword", "if"),
        ("keyword", "pass"),
        ("keyword", "case"),
        ("comment", "# c"),
    ]
    for names in (
        "match = re.match(pattern, text)\n",
        "match.group(1)\n",
        "match(x)\n",
        "case = 1\n",
        "x = match(y)\n",
        "if match:\n",
        "def f(match, case): ...\n",
    ):
        found = colored(await tokens(page, names))
        assert ("keyword", "match") not in found, names
        assert ("keyword", "case") not in found, names
    assert colored(await tokens(page, "type Alias = int\ntype(x)\n")) == [
        ("keyword", "type"),
        ("builtin", "int"),
        ("builtin", "type"),
    ]


async def test_the_other_languages_keys_strings_comments_numbers(
    running: RunningApp, page: Page
) -> None:
    await blank_page(page, running)
    toml = (
        '[project]\nname = "shop" # c\ndeps = [\n  "a>=1",\n]\n[[tool.x]]\na.b = 1_000\nt = true\n'
    )
    assert colored(await tokens(page, toml, "toml")) == [
        ("keyword", "[project]"),
        ("def", "name"),
        ("string", '"shop"'),
        ("comment", "# c"),
        ("def", "deps"),
        ("string", '"a>=1"'),
        ("keyword", "[[tool.x]]"),
        ("def", "a.b"),
        ("number", "1_000"),
        ("def", "t"),
        ("keyword", "true"),
    ]
    json = '{"a": [1, -2.5e3, true, null], "b": "x\\"y"}'
    assert colored(await tokens(page, json, "json")) == [
        ("def", '"a"'),
        ("number", "1"),
        ("number", "-2.5e3"),
        ("keyword", "true"),
        ("keyword", "null"),
        ("def", '"b"'),
        ("string", '"x\\"y"'),
    ]
    ini = "[section]\nkey = value\n; comment\nn: 42\n"
    assert colored(await tokens(page, ini, "ini")) == [
        ("keyword", "[section]"),
        ("def", "key"),
        ("comment", "; comment"),
        ("def", "n"),
        ("number", "42"),
    ]
    markdown = (
        "# Title\n\nSome `code`, **bold**, *em* and [a link](https://x).\n\n- item\n"
        "```python\ndef f(): pass\n```\n"
    )
    assert colored(await tokens(page, markdown, "markdown")) == [
        ("def", "# Title"),
        ("string", "`code`"),
        ("keyword", "**bold**"),
        ("keyword", "*em*"),
        ("builtin", "[a link](https://x)"),
        ("number", "-"),
        ("comment", "```python"),
        ("keyword", "def"),  # the fence's code in the fence's language
        ("def", "f"),
        ("keyword", "pass"),
        ("comment", "```"),
    ]


HIGHLIGHT = """async ([text, language]) => {
    const { highlight } = await import("/static/highlight.js");
    const fragment = highlight(text, language);
    const nodes = [...fragment.childNodes].map((node) => node.nodeType === Node.TEXT_NODE
        ? ["", node.data] : [node.className, node.textContent, node.children.length]);
    const box = document.createElement("pre");
    box.append(highlight(text, language));
    return { nodes, text: box.textContent, html: box.innerHTML };
}"""


async def test_highlight_is_text_nodes_and_spans_built_without_markup(
    running: RunningApp, page: Page
) -> None:
    await blank_page(page, running)
    text = "x = '<b>&amp;</b>'  # <script>alert(1)</script>\n"
    result = await page.evaluate(HIGHLIGHT, [text, "python"])
    assert result["text"] == text
    assert result["nodes"] == [
        ["", "x = "],
        ["tok-string", "'<b>&amp;</b>'", 0],
        ["", "  "],
        ["tok-comment", "# <script>alert(1)</script>", 0],
        ["", "\n"],
    ]
    assert "<script>" not in result["html"]


# Times tokens() and highlight() on `text`, best of `runs`, and checks the answer is whole.
TIMING = """async ([text, language, runs]) => {
    const { tokens, highlight } = await import("/static/highlight.js");
    let tokensMs = Infinity, highlightMs = Infinity, count = 0, whole = true;
    for (let run = 0; run < runs; run++) {
        let start = performance.now();
        const list = tokens(text, language);
        tokensMs = Math.min(tokensMs, performance.now() - start);
        count = list.length;
        start = performance.now();
        const fragment = highlight(text, language);
        highlightMs = Math.min(highlightMs, performance.now() - start);
        whole = whole && fragment.textContent === text;
    }
    return { tokensMs, highlightMs, count, whole };
}"""


async def test_a_ten_thousand_line_file_and_pathological_ones_take_linear_time(
    running: RunningApp, api_key: str, page: Page
) -> None:
    generated = await generate_via_api(running, api_key)
    python = "".join(f.text for f in generated.files.values() if f.language == "python")
    lines = python.splitlines(keepends=True)
    big = "".join(lines * (10_000 // len(lines) + 1))
    big = "".join(big.splitlines(keepends=True)[:10_000])
    await blank_page(page, running)
    cases = {
        "python, 10,000 generated lines": (big, "python"),
        "markdown, 10,000 generated lines": (big, "markdown"),
        "toml, 10,000 generated lines": (big, "toml"),
        "python, 200 KB of f'{": ("f'{" * 66_000, "python"),
        "python, 200 KB of quotes": ("'\"" * 100_000, "python"),
        "python, 200 KB of match lines": ("match x:\n" * 22_000, "python"),
        "markdown, 200 KB of [": ("[" * 200_000, "markdown"),
        "markdown, 200 KB of ** and `": ("**a ``b " * 25_000, "markdown"),
        "json, 200 KB of one string": ('"' + "a\\" * 100_000, "json"),
        "sql, 200 KB unterminated": ("/*" + "'" * 200_000, "sql"),
    }
    print()
    for name, (text, language) in cases.items():
        timing = await page.evaluate(TIMING, [text, language, 5])
        assert timing["whole"], name
        print(
            f"highlight.js {name}: {len(text):,} chars, {timing['count']:,} tokens, "
            f"tokens() {timing['tokensMs']:.1f} ms, highlight() {timing['highlightMs']:.1f} ms"
        )
        # Not a speed figure: a bound far above it that a quadratic scan would cross.
        assert timing["tokensMs"] < 1_000, (name, timing)
