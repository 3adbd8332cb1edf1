/**
 * fileview.js: one generated file on the page: its path, Copy and Download buttons, a status
 * line, and the code highlighted with line numbers. An ES module: no dependencies beyond
 * highlight.js, no build step. The page must link its style sheet, after theme.css:
 *   <link rel="stylesheet" href="/static/fileview.css">
 *
 *   import { FileViewer } from "/static/fileview.js";
 *   const viewer = new FileViewer(element, {
 *     load: async (path) => (await api("GET", `/api/generations/${id}/files/${path}`)).text(),
 *     filename: (path) => path.split("/").pop(),   // the download's name; this is the default
 *   });
 *   await viewer.show("app/main.py", "python");   // language: file.saved's `language`
 *   viewer.clear();
 *
 * Exports: FileViewer. new FileViewer(root, {load, filename}) takes over root's children
 * (and gives root the class "fileview"); it throws a TypeError without root or load.
 *   load(path)      a Promise of the file's text (required); a rejection's message is shown
 *                   in words ("Could not load app/main.py: 404 Not Found", role="alert")
 *   filename(path)  the name a download is saved under (default: the path's last part)
 * show(path, language) loads and shows a file; it resolves true once the file is on screen,
 *   false when the load failed or a later show() or clear() took its place (a slow first
 *   answer never overwrites a second file), and never rejects. Without a language it goes by
 *   the path's extension, as service/files.py does.
 * clear() empties the viewer and drops any load under way.
 *
 * What it draws, by class (fileview.css styles them; tests find them by these names):
 *   .fileview-bar     the path (<code class="fileview-path">), then Copy and Download
 *                     buttons whose accessible names hold the path ("Copy app/main.py")
 *   .fileview-status  role="status": loading, "Copied 1,234 characters to the clipboard", ...
 *   .fileview-error   role="alert": why a file could not be loaded
 *   pre[data-code]    the code: focusable (tabindex=0) and scrollable, one
 *                     span.fileview-line per line holding the line's "\n", so that its
 *                     textContent is the file exactly. Line numbers are CSS counters in each
 *                     line's ::before: never in textContent, a selection or a copy, and given
 *                     empty alternative text so that screen readers do not read them.
 * Tab order: Copy, Download, the code. While a file loads, the buttons are aria-disabled
 * (they keep focus) and the code is aria-busy.
 */
import { tokens } from "./highlight.js";

// service/files.py's LANGUAGES: the language of a path shown without one.
const LANGUAGES = {
  py: "python", toml: "toml", md: "markdown", txt: "text", json: "json", yaml: "yaml",
  yml: "yaml", ini: "ini", cfg: "ini", sql: "sql", sh: "shell",
};
const COUNT = new Intl.NumberFormat("en");

function languageOf(path) {
  const name = path.split("/").pop();
  const dot = name.lastIndexOf(".");
  return (dot > 0 && LANGUAGES[name.slice(dot + 1).toLowerCase()]) || "text";
}

function element(tag, attributes = {}, text = "") {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) node.setAttribute(name, value);
  node.textContent = text;
  return node;
}

// One span.fileview-line per line, each ending with its "\n" (the last one may not), the
// tokens inside; a token that spans lines (a docstring) is cut at each line break. A file
// that ends with "\n" has no empty line after it, as an editor counts lines. (appendChild
// and createTextNode: a third faster than append() on 10,000 lines.)
function lines(text, language) {
  const fragment = document.createDocumentFragment();
  let count = 0;
  let line = null;
  for (const [kind, piece] of tokens(text, language)) {
    for (let from = 0; from < piece.length; ) {
      const newline = piece.indexOf("\n", from);
      const to = newline === -1 ? piece.length : newline + 1;
      if (!line) {
        line = document.createElement("span");
        line.className = "fileview-line";
        count += 1;
      }
      const part = document.createTextNode(piece.slice(from, to));
      if (kind) {
        const token = document.createElement("span");
        token.className = `tok-${kind}`;
        token.appendChild(part);
        line.appendChild(token);
      } else {
        line.appendChild(part);
      }
      if (newline !== -1) {
        fragment.appendChild(line);
        line = null;
      }
      from = to;
    }
  }
  if (line) fragment.appendChild(line);
  return { fragment, count };
}

export class FileViewer {
  #root;
  #load;
  #filename;
  #shown = null; // {path, text} on screen, null while none
  #loading = 0; // counts show() and clear() calls: a load answers only if it is still the last
  #bar;
  #path;
  #copyButton;
  #downloadButton;
  #status;
  #error;
  #code;

  constructor(root, { load, filename = (path) => path.split("/").pop() } = {}) {
    if (!(root instanceof Element)) throw new TypeError("FileViewer needs an element to draw in");
    if (typeof load !== "function") throw new TypeError("FileViewer needs load(path): a Promise of the text");
    if (typeof filename !== "function") throw new TypeError("FileViewer's filename must be a function");
    this.#root = root;
    this.#load = load;
    this.#filename = filename;
    this.#path = element("code", { class: "fileview-path" });
    this.#copyButton = element("button", { type: "button", class: "fileview-copy" }, "Copy");
    this.#downloadButton = element("button", { type: "button", class: "fileview-download" }, "Download");
    this.#bar = element("div", { class: "fileview-bar" });
    this.#bar.append(this.#path, this.#copyButton, this.#downloadButton);
    this.#status = element("p", { class: "fileview-status", role: "status" });
    this.#error = element("p", { class: "fileview-error", role: "alert" });
    this.#code = element("pre", { class: "fileview-code", tabindex: "0", "data-code": "", role: "region" });
    this.#copyButton.addEventListener("click", () => this.#copy());
    this.#downloadButton.addEventListener("click", () => this.#download());
    root.classList.add("fileview");
    root.replaceChildren(this.#bar, this.#status, this.#error, this.#code);
    this.clear();
  }

  async show(path, language) {
    const ticket = ++this.#loading;
    this.#shown = null;
    this.#label(path);
    this.#busy(true);
    this.#error.textContent = "";
    this.#status.textContent = `Loading ${path}…`;
    this.#code.replaceChildren();
    let text;
    try {
      text = await this.#load(path);
      if (typeof text !== "string") throw new TypeError(`load gave ${typeof text}, not text`);
    } catch (error) {
      if (ticket !== this.#loading) return false;
      this.#busy(false);
      this.#status.textContent = "";
      this.#error.textContent = `Could not load ${path}: ${error?.message || error}`;
      this.#code.hidden = true;
      this.#enable(false);
      return false;
    }
    // A later show() or clear() owns the viewer now: this answer is not wanted any more.
    if (ticket !== this.#loading) return false;
    const { fragment, count } = lines(text, language || languageOf(path));
    this.#code.replaceChildren(fragment);
    this.#code.dataset.digits = String(Math.max(String(count).length, 2));
    this.#shown = { path, text };
    this.#busy(false);
    this.#enable(true);
    this.#status.textContent = text
      ? `${path}: ${COUNT.format(count)} ${count === 1 ? "line" : "lines"}, ${COUNT.format(text.length)} characters`
      : `${path} is empty`;
    return true;
  }

  clear() {
    this.#loading += 1;
    this.#shown = null;
    this.#bar.hidden = true;
    this.#code.hidden = true;
    this.#code.replaceChildren();
    this.#code.removeAttribute("aria-busy");
    this.#status.textContent = "";
    this.#error.textContent = "";
  }

  #label(path) {
    this.#bar.hidden = false;
    this.#code.hidden = false;
    this.#path.textContent = path;
    this.#copyButton.setAttribute("aria-label", `Copy ${path}`);
    this.#downloadButton.setAttribute("aria-label", `Download ${path}`);
    this.#code.setAttribute("aria-label", `Contents of ${path}`);
  }

  #busy(busy) {
    if (busy) this.#code.setAttribute("aria-busy", "true");
    else this.#code.removeAttribute("aria-busy");
    this.#enable(!busy);
  }

  // aria-disabled, not disabled: a button that has focus keeps it while the next file loads.
  #enable(enabled) {
    for (const button of [this.#copyButton, this.#downloadButton]) {
      button.setAttribute("aria-disabled", String(!enabled));
    }
  }

  async #copy() {
    const shown = this.#shown;
    if (!shown) return;
    const what = `${COUNT.format(shown.text.length)} characters`;
    let reason = "the browser has no clipboard here";
    if (navigator.clipboard?.writeText) {
      try {
        await navigator.clipboard.writeText(shown.text);
        this.#say(shown, `Copied ${what} to the clipboard`);
        return;
      } catch (error) {
        reason = error?.message || String(error);
      }
    }
    this.#say(
      shown,
      this.#copyByCommand(shown.text)
        ? `Copied ${what} with the browser's copy command`
        : `Could not copy: ${reason}`,
    );
  }

  // The older way: the browser's copy command, for a page without navigator.clipboard (not
  // a secure context) or where writeText was refused. The code is selected, so the reader
  // sees what was copied, and the copy event carries the text itself: a selection would give
  // the rendered text, which need not be the file byte for byte (CRLF, tabs).
  #copyByCommand(text) {
    const selection = document.getSelection();
    const range = document.createRange();
    range.selectNodeContents(this.#code);
    selection?.removeAllRanges();
    selection?.addRange(range);
    const put = (event) => {
      event.clipboardData.setData("text/plain", text);
      event.preventDefault();
    };
    document.addEventListener("copy", put);
    try {
      return document.execCommand("copy");
    } catch (_) {
      return false;
    } finally {
      document.removeEventListener("copy", put);
    }
  }

  #download() {
    const shown = this.#shown;
    if (!shown) return;
    const name = this.#filename(shown.path);
    const link = element("a", { download: name, hidden: "" });
    const blob = new Blob([shown.text], { type: "text/plain;charset=utf-8" });
    link.href = URL.createObjectURL(blob);
    this.#root.append(link);
    link.click();
    link.remove();
    // Later, not now: the download reads the blob after click() returns.
    setTimeout(() => URL.revokeObjectURL(link.href), 60_000);
    this.#say(shown, `Downloading ${name} (${COUNT.format(blob.size)} bytes)`);
  }

  // A status about the file on screen, unless another one took its place meanwhile.
  #say(shown, text) {
    if (this.#shown === shown) this.#status.textContent = text;
  }
}
