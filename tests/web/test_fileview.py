"""``service/web/fileview.js`` alone, in a real Chromium, on a page of the service's origin
with its style sheets and nothing else: a FileViewer loads files from the real API, shows
them whole with line numbers, copies and downloads them byte for byte, says what went wrong,
and is usable from the keyboard and by assistive technology in both colour schemes."""

from __future__ import annotations

import re
from typing import Any

import pytest
from playwright.async_api import Page

from service.api.page import WEB_DIR
from service.files import LANGUAGES
from tests.conftest import RunningApp
from tests.web.browser import axe_violations, blank_page, browser_page, screenshot_path
from tests.web.generated import Generated, generate_via_api

pytestmark = pytest.mark.slow

CLIPBOARD = ["clipboard-read", "clipboard-write"]

# The viewer in a <main> of a page styled as genstream's is (theme.css, app.css, then
# fileview.css), as `window.viewer`. Its load() asks the real API with the key; a path in
# `window.holding` waits until the test calls `window.release(path)`, and `window.texts`
# answers a path without asking the API (texts no generator writes: CRLF, tabs, ...).
MOUNT = """async ([key, id, options]) => {
    document.documentElement.lang = "en";
    for (const name of ["theme", "app", "fileview"]) {
        const link = document.createElement("link");
        link.rel = "stylesheet";
        link.href = `/static/${name}.css`;
        const loaded = new Promise((resolve, reject) => {
            link.onload = resolve;
            link.onerror = reject;
        });
        document.head.append(link);
        await loaded;
    }
    const style = document.createElement("style");
    style.textContent = "body { background: var(--bg); color: var(--fg); }";
    document.head.append(style);
    const { FileViewer } = await import("/static/fileview.js");
    const main = document.createElement("main");
    const title = document.createElement("h1");
    title.textContent = "File viewer";
    const root = document.createElement("section");
    root.setAttribute("aria-label", "File");
    main.append(title, root);
    document.body.append(main);
    Object.assign(window, { holding: new Set(), waiting: new Map(), texts: {} });
    window.release = (path) => window.waiting.get(path)();
    async function load(path) {
        if (window.holding.has(path)) await new Promise((go) => window.waiting.set(path, go));
        if (path in window.texts) return window.texts[path];
        const response = await fetch(`/api/generations/${id}/files/${path}`, {
            headers: { Authorization: `Bearer ${key}` },
        });
        if (!response.ok) throw new Error(`${response.status}: ${(await response.json()).detail}`);
        return response.text();
    }
    const filename = options.flat ? (path) => path.replaceAll("/", "_") : undefined;
    window.viewer = new FileViewer(root, { load, ...(filename ? { filename } : {}) });
}"""

# What the viewer shows, read the way the tests compare it.
SHOWN = """() => {
    const code = document.querySelector("pre[data-code]");
    const bar = document.querySelector(".fileview-bar");
    return {
        text: code.textContent,
        lines: code.querySelectorAll(":scope > .fileview-line").length,
        spans: code.querySelectorAll("[class^=tok-]").length,
        kinds: [...new Set([...code.querySelectorAll("[class^=tok-]")].map((s) => s.className))],
        path: document.querySelector(".fileview-path").textContent,
        status: document.querySelector(".fileview-status").textContent,
        error: document.querySelector(".fileview-error").textContent,
        busy: code.getAttribute("aria-busy"),
        barHidden: bar.hidden,
        codeHidden: code.hidden,
        copy: document.querySelector(".fileview-copy").getAttribute("aria-label"),
        download: document.querySelector(".fileview-download").getAttribute("aria-label"),
    };
}"""


def line_count(text: str) -> int:
    """Lines as an editor counts them: a last "\\n" ends a line, it does not start one."""
    return text.count("\n") + (0 if text == "" or text.endswith("\n") else 1)


async def mount(
    page: Page, running: RunningApp, key: str, generated: Generated, **options: Any
) -> None:
    await blank_page(page, running)
    await page.evaluate(MOUNT, [key, generated.id, options])


async def show(page: Page, path: str, language: str | None = None) -> bool:
    shown: bool = await page.evaluate("([p, l]) => window.viewer.show(p, l)", [path, language])
    return shown


async def shown(page: Page) -> dict[str, Any]:
    result: dict[str, Any] = await page.evaluate(SHOWN)
    return result


async def clipboard(page: Page) -> str:
    text: str = await page.evaluate("() => navigator.clipboard.readText()")
    return text


async def test_a_generated_file_is_shown_whole_line_by_line_and_highlighted(
    running: RunningApp, api_key: str, page: Page
) -> None:
    generated = await generate_via_api(running, api_key)
    await mount(page, running, api_key, generated)
    for file in generated.files.values():
        assert await show(page, file.path, file.language)
        view = await shown(page)
        assert view["text"] == file.text, file.path
        assert view["lines"] == line_count(file.text), file.path
        assert view["path"] == file.path
        assert view["copy"] == f"Copy {file.path}"
        assert view["download"] == f"Download {file.path}"
        assert view["error"] == ""
        assert view["busy"] is None
    main = generated.files["app/main.py"]
    await show(page, main.path, main.language)
    view = await shown(page)
    assert view["spans"] > 20
    assert {"tok-keyword", "tok-string", "tok-def", "tok-builtin"} <= set(view["kinds"])
    lines, characters = line_count(main.text), len(main.text)
    assert view["status"] == f"app/main.py: {lines} lines, {characters:,} characters"
    # Without a language, the path's extension says it, as service/files.py's does.
    assert await show(page, "pyproject.toml")
    assert "tok-keyword" in (await shown(page))["kinds"]
    # The line numbers are CSS counters: in no text, and out of what a reader selects.
    selected = await page.evaluate(
        """() => {
            const code = document.querySelector("pre[data-code]");
            const range = document.createRange();
            range.selectNodeContents(code);
            getSelection().removeAllRanges();
            getSelection().addRange(range);
            const number = getComputedStyle(code.querySelector(".fileview-line"), "::before");
            return { text: getSelection().toString(), number: number.content };
        }"""
    )
    # Chromium leaves a selection's last line break out; Copy gives the file with it.
    assert selected["text"] == generated.files["pyproject.toml"].text.removesuffix("\n")
    assert selected["number"].startswith("counter(fileview-line)")


async def test_texts_no_generator_writes_come_back_whole(
    running: RunningApp, api_key: str, page: Page
) -> None:
    generated = await generate_via_api(running, api_key)
    await mount(page, running, api_key, generated)
    texts = {
        "crlf.py": "def f():\r\n\treturn 'x'  # é 😀\r\n\r\nno_newline_at_the_end",
        "empty.py": "",
        "blank.txt": "\n\n\n",
        "unterminated.py": 's = """never closed\n\tx = 1\n',
    }
    await page.evaluate("(texts) => Object.assign(window.texts, texts)", texts)
    for path, text in texts.items():
        assert await show(page, path)
        view = await shown(page)
        assert view["text"] == text, path
        assert view["lines"] == line_count(text), path
    assert (await shown(page))["status"] == "unterminated.py: 2 lines, 27 characters"
    await show(page, "empty.py")
    assert (await shown(page))["status"] == "empty.py is empty"


async def test_copy_puts_the_exact_text_on_the_clipboard_and_says_so(
    running: RunningApp, api_key: str
) -> None:
    generated = await generate_via_api(running, api_key)
    async with browser_page(permissions=CLIPBOARD) as page:
        await mount(page, running, api_key, generated)
        user = generated.files["app/api/user.py"]
        await show(page, user.path, user.language)
        await page.get_by_role("button", name=f"Copy {user.path}").click()
        await page.wait_for_function(
            "() => document.querySelector('.fileview-status').textContent.startsWith('Copied')"
        )
        assert await clipboard(page) == user.text
        view = await shown(page)
        assert view["status"] == f"Copied {len(user.text):,} characters to the clipboard"
        # CRLF and tabs too, which a copy of the rendered selection could change.
        crlf = "a\r\n\tb\r\n"
        await page.evaluate("(t) => { window.texts['crlf.txt'] = t; }", crlf)
        await show(page, "crlf.txt")
        await page.click(".fileview-copy")
        await page.wait_for_function(
            "t => document.querySelector('.fileview-status').textContent === t",
            arg="Copied 7 characters to the clipboard",
        )
        assert await clipboard(page) == crlf


async def test_copy_without_the_clipboard_api_uses_the_copy_command_or_says_why_not(
    running: RunningApp, api_key: str
) -> None:
    generated = await generate_via_api(running, api_key)
    async with browser_page(permissions=CLIPBOARD) as page:
        await mount(page, running, api_key, generated)
        main = generated.files["app/main.py"]
        await show(page, main.path, main.language)
        # No navigator.clipboard, as on a page served over plain HTTP to another host.
        await page.evaluate(
            """() => {
                window.realClipboard = navigator.clipboard;
                Object.defineProperty(navigator, "clipboard", {
                    value: undefined, configurable: true,
                });
            }"""
        )
        await page.click(".fileview-copy")
        status = ".fileview-status"
        await page.wait_for_function(
            f"() => document.querySelector('{status}').textContent.startsWith('Copied')"
        )
        assert await page.text_content(status) == (
            f"Copied {len(main.text):,} characters with the browser's copy command"
        )
        assert await page.evaluate("() => window.realClipboard.readText()") == main.text
        # writeText refused and the copy command too: the reason, in words.
        await page.evaluate(
            """() => {
                const refused = new DOMException("Write permission denied.", "NotAllowedError");
                Object.defineProperty(navigator, "clipboard", {
                    configurable: true, value: { writeText: () => Promise.reject(refused) },
                });
                document.execCommand = () => false;
            }"""
        )
        await page.click(".fileview-copy")
        await page.wait_for_function(
            f"() => document.querySelector('{status}').textContent.startsWith('Could not')"
        )
        assert await page.text_content(status) == "Could not copy: Write permission denied."


async def test_download_saves_the_exact_bytes_under_the_file_name(
    running: RunningApp, api_key: str, page: Page
) -> None:
    generated = await generate_via_api(running, api_key)
    await mount(page, running, api_key, generated)
    readme = generated.files["README.md"]
    await show(page, readme.path, readme.language)
    async with page.expect_download() as info:
        await page.get_by_role("button", name="Download README.md").click()
    download = await info.value
    assert download.suggested_filename == "README.md"
    assert (await download.path()).read_bytes() == readme.text.encode()
    text = "é 😀\r\n\tno newline"
    await page.evaluate("(t) => { window.texts['deep/dir/x.txt'] = t; }", text)
    await show(page, "deep/dir/x.txt")
    async with page.expect_download() as info:
        await page.click(".fileview-download")
    download = await info.value
    assert download.suggested_filename == "x.txt"  # the default name: the path's last part
    assert (await download.path()).read_bytes() == text.encode()
    size = len(text.encode())
    assert (await shown(page))["status"] == f"Downloading x.txt ({size} bytes)"


async def test_a_filename_function_names_the_download(
    running: RunningApp, api_key: str, page: Page
) -> None:
    generated = await generate_via_api(running, api_key)
    await mount(page, running, api_key, generated, flat=True)
    user = generated.files["app/models/user.py"]
    await show(page, user.path, user.language)
    async with page.expect_download() as info:
        await page.click(".fileview-download")
    download = await info.value
    assert download.suggested_filename == "app_models_user.py"
    assert (await download.path()).read_bytes() == user.text.encode()


async def test_a_file_that_cannot_be_loaded_says_why_in_words(
    running: RunningApp, api_key: str, page: Page
) -> None:
    generated = await generate_via_api(running, api_key)
    await mount(page, running, api_key, generated)
    main = generated.files["app/main.py"]
    await show(page, main.path, main.language)
    assert await show(page, "app/nope.py") is False
    view = await shown(page)
    assert view["error"].startswith("Could not load app/nope.py: 404")
    assert await page.get_by_role("alert").text_content() == view["error"]
    assert view["text"] == ""  # nothing of the file shown before
    assert view["lines"] == 0
    assert view["path"] == "app/nope.py"
    assert view["busy"] is None
    assert not await page.is_visible("pre[data-code]")  # no empty box under the error
    # Copy and Download do nothing for a file that is not there.
    assert await page.get_attribute(".fileview-copy", "aria-disabled") == "true"
    await page.click(".fileview-copy", force=True)
    assert (await shown(page))["status"] == ""
    # The next file clears the error.
    assert await show(page, main.path, main.language)
    view = await shown(page)
    assert view["error"] == ""
    assert view["text"] == main.text


async def test_a_slow_first_answer_never_overwrites_the_file_asked_for_next(
    running: RunningApp, api_key: str, page: Page
) -> None:
    generated = await generate_via_api(running, api_key)
    await mount(page, running, api_key, generated)
    main, readme = generated.files["app/main.py"], generated.files["README.md"]
    await page.evaluate(
        """(path) => {
            window.holding.add(path);
            window.first = window.viewer.show(path, "python");
        }""",
        main.path,
    )
    await page.wait_for_function("(p) => window.waiting.has(p)", arg=main.path)
    view = await shown(page)
    assert view["busy"] == "true"
    assert view["status"] == f"Loading {main.path}…"
    assert await show(page, readme.path, readme.language)
    answered = "async (path) => { window.release(path); return await window.first; }"
    assert await page.evaluate(answered, main.path) is False
    view = await shown(page)
    assert view["text"] == readme.text
    assert view["path"] == readme.path
    # clear() drops a load under way the same way.
    await page.evaluate(
        """(path) => {
            window.holding.add(path);
            window.waiting.delete(path);
            window.first = window.viewer.show(path, "python");
        }""",
        generated.files["app/settings.py"].path,
    )
    await page.wait_for_function("(p) => window.waiting.has(p)", arg="app/settings.py")
    await page.evaluate("() => window.viewer.clear()")
    answered = "async (path) => { window.release(path); return await window.first; }"
    assert await page.evaluate(answered, "app/settings.py") is False
    view = await shown(page)
    assert view["text"] == ""
    assert view["barHidden"]
    assert view["codeHidden"]
    assert not await page.is_visible(".fileview-bar")
    assert not await page.is_visible("pre[data-code]")


# Which of the viewer's parts has focus.
FOCUSED = """() => {
    const names = {
        ".fileview-copy": "copy", ".fileview-download": "download", "pre[data-code]": "code",
    };
    const found = Object.keys(names).find((selector) => document.activeElement.matches(selector));
    return found ? names[found] : document.activeElement.tagName;
}"""


async def test_the_keyboard_reaches_copy_download_and_the_code_in_order_and_enter_copies(
    running: RunningApp, api_key: str
) -> None:
    generated = await generate_via_api(running, api_key)
    async with browser_page(permissions=CLIPBOARD) as page:
        await mount(page, running, api_key, generated)
        main = generated.files["app/main.py"]
        await show(page, main.path, main.language)
        order = []
        for _ in range(3):
            await page.keyboard.press("Tab")
            order.append(await page.evaluate(FOCUSED))
        assert order == ["copy", "download", "code"]
        # Focused, the code is a scroll container: the arrow and page keys scroll it.
        scrolls = "c => c.scrollHeight > c.clientHeight && getComputedStyle(c).overflowY === 'auto'"
        assert await page.eval_on_selector("pre[data-code]", scrolls)
        await page.keyboard.press("Shift+Tab")
        await page.keyboard.press("Shift+Tab")
        assert await page.evaluate(FOCUSED) == "copy"
        await page.keyboard.press("Enter")
        await page.wait_for_function(
            "() => document.querySelector('.fileview-status').textContent.startsWith('Copied')"
        )
        assert await clipboard(page) == main.text
        assert await page.evaluate(FOCUSED) == "copy"  # focus stays where it was


# Each text colour the viewer draws, against the background it is drawn on: WCAG's contrast
# ratio, computed from the colours the browser resolved. axe-core checks text but not the
# line numbers (generated content), so they are measured here too.
CONTRAST = """() => {
    const rgb = (css) => css.match(/[\\d.]+/g).slice(0, 3).map(Number);
    const luminance = (css) => {
        const [r, g, b] = rgb(css).map((v) => {
            v /= 255;
            return v <= 0.04045 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4;
        });
        return 0.2126 * r + 0.7152 * g + 0.0722 * b;
    };
    const ratio = (a, b) => {
        const [x, y] = [luminance(a), luminance(b)].sort((p, q) => q - p);
        return (x + 0.05) / (y + 0.05);
    };
    const background = (element) => {
        for (let node = element; node; node = node.parentElement) {
            const color = getComputedStyle(node).backgroundColor;
            if (color !== "rgba(0, 0, 0, 0)") return color;
        }
        return "rgb(255, 255, 255)";
    };
    const code = document.querySelector("pre[data-code]");
    const pairs = {};
    for (const span of code.querySelectorAll("[class^=tok-]")) {
        pairs[span.className] = ratio(getComputedStyle(span).color, background(code));
    }
    const line = code.querySelector(".fileview-line");
    const number = getComputedStyle(line, "::before");
    pairs["line number"] = ratio(number.color, number.backgroundColor);
    pairs["plain code"] = ratio(getComputedStyle(code).color, background(code));
    const texts = [".fileview-path", ".fileview-status", ".fileview-copy", ".fileview-download"];
    for (const selector of texts) {
        const element = document.querySelector(selector);
        pairs[selector] = ratio(getComputedStyle(element).color, background(element));
    }
    return pairs;
}"""


async def test_axe_finds_nothing_and_every_colour_keeps_aa_contrast_in_both_schemes(
    running: RunningApp, api_key: str, page: Page, dark_page: Page
) -> None:
    generated = await generate_via_api(running, api_key)
    user = generated.files["app/api/user.py"]
    for scheme, viewer in (("light", page), ("dark", dark_page)):
        await mount(viewer, running, api_key, generated)
        await show(viewer, user.path, user.language)
        assert await axe_violations(viewer) == [], scheme
        ratios = await viewer.evaluate(CONTRAST)
        kinds = {"keyword", "string", "comment", "number", "def", "builtin", "decorator"}
        assert {f"tok-{kind}" for kind in kinds} <= set(ratios), scheme
        low = {what: round(ratio, 2) for what, ratio in ratios.items() if ratio < 4.5}
        assert low == {}, f"under 4.5:1 in the {scheme} scheme"
        await viewer.locator(".fileview").screenshot(path=screenshot_path(f"fileview-{scheme}"))
        assert await show(viewer, "app/nope.py") is False
        assert await axe_violations(viewer) == [], scheme


# Shows `path` and times it: show() (highlighting and building the lines) and the layout after.
TIMED_SHOW = """async (path) => {
    const start = performance.now();
    await window.viewer.show(path, "python");
    const shown = performance.now();
    document.querySelector("pre[data-code]").getBoundingClientRect();
    document.body.offsetHeight;
    return { showMs: shown - start, layoutMs: performance.now() - shown };
}"""


async def test_a_ten_thousand_line_file_is_shown_whole(
    running: RunningApp, api_key: str, page: Page
) -> None:
    generated = await generate_via_api(running, api_key)
    python = [
        line
        for f in generated.files.values()
        if f.language == "python"
        for line in f.text.splitlines(keepends=True)
    ]
    big = "".join((python * (10_000 // len(python) + 1))[:10_000])
    await mount(page, running, api_key, generated)
    await page.evaluate("(t) => { window.texts['big.py'] = t; }", big)
    timing = await page.evaluate(TIMED_SHOW, "big.py")
    view = await shown(page)
    assert view["text"] == big
    assert view["lines"] == 10_000
    assert await page.get_attribute("pre[data-code]", "data-digits") == "5"
    print(
        f"\nfileview.js 10,000 lines ({len(big):,} characters, {view['spans']:,} spans): "
        f"show() {timing['showMs']:.0f} ms, then layout {timing['layoutMs']:.0f} ms"
    )


def test_a_path_without_a_language_goes_by_the_extensions_of_service_files() -> None:
    source = (WEB_DIR / "fileview.js").read_text()
    found = re.search(r"const LANGUAGES = \{(.*?)\};", source, re.DOTALL)
    assert found is not None
    by_extension = {
        f".{ext}": language for ext, language in re.findall(r'(\w+): "(\w+)"', found[1])
    }
    assert by_extension == LANGUAGES
