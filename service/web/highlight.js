/**
 * highlight.js: syntax highlighting for the files a genstream run generates, in the browser.
 * An ES module: no dependencies, no build step.
 *
 *   import { tokens, highlight } from "/static/highlight.js";
 *   tokens('def f(): return "x"', "python");
 *     // [["keyword", "def"], ["", " "], ["def", "f"], ["", "(): "], ["keyword", "return"], ...]
 *   element.replaceChildren(highlight(text, language));   // text nodes and <span class="tok-KIND">
 *
 * tokens(text, language) returns [kind, text] pairs. kind is "keyword", "string", "comment",
 * "number", "def" (a name being defined; a heading, a key), "builtin", "decorator", or ""
 * (plain). Joined, the pairs' texts are `text` exactly, whatever it holds (an unterminated
 * string, CRLF, a lone surrogate): a scanner only ever says where the next token ends, and
 * one that failed would leave the file as one plain token. Languages are those of
 * service/files.py (`language` of file.saved): python, toml, markdown, json, yaml, ini, sql,
 * shell, and text; a few aliases (py, md, yml, cfg, sh, bash) serve markdown's code fences.
 * Any other language, text included, is one plain token. Adjacent tokens never share a kind.
 * highlight(text, language) is the same as a DocumentFragment, built without innerHTML.
 *
 * Hand-written on purpose: a vendored highlighter (highlight.js, Prism, Shiki) weighs
 * 30-100 KB for these few languages, and a page with no build step would load it whole.
 * Python gets a real scanner (string prefixes, triple quotes, f-strings' replacement fields,
 * numbers, decorators, def and class names, soft keywords); the others are a few regular
 * expressions each. Every scanner moves forward only and reads each character a bounded
 * number of times, so time is linear in the text: a 10,000-line file takes milliseconds.
 */

// Where the tokens of one text end, kept as [kind, end] and sliced once at the end. put()
// extends the current token or starts the next one; it never goes back, so the tokens cover
// the text from 0 to its length without a gap or an overlap.
class Tokens {
  constructor(text) {
    this.text = text;
    this.at = 0; // where the tokens so far end
    this.ends = [];
  }

  // [this.at, end) as `kind`.
  put(kind, end) {
    if (end <= this.at) return;
    const last = this.ends[this.ends.length - 1];
    if (last && last[0] === kind) last[1] = end;
    else this.ends.push([kind, end]);
    this.at = end;
  }

  // [start, end) as `kind`, what lies before it plain.
  mark(kind, start, end) {
    this.put("", start);
    this.put(kind, end);
  }

  list() {
    this.put("", this.text.length);
    let start = 0;
    return this.ends.map(([kind, end]) => [kind, this.text.slice(start, (start = end))]);
  }
}

// --- Python ----------------------------------------------------------------------------------

const PY_KEYWORDS = new Set(
  `False None True and as assert async await break class continue def del elif else except
   finally for from global if import in is lambda nonlocal not or pass raise return try while
   with yield`.split(/\s+/),
);
const PY_BUILTINS = new Set(
  `abs aiter all anext any ascii bin bool breakpoint bytearray bytes callable chr classmethod
   compile complex delattr dict dir divmod enumerate eval exec filter float format frozenset
   getattr globals hasattr hash help hex id input int isinstance issubclass iter len list
   locals map max memoryview min next object oct open ord pow print property range repr
   reversed round set setattr slice sorted staticmethod str sum super tuple type vars zip
   __import__ __name__ __file__ __doc__ NotImplemented Ellipsis
   BaseException BaseExceptionGroup Exception ExceptionGroup ArithmeticError AssertionError
   AttributeError BlockingIOError BrokenPipeError BufferError ConnectionError
   ConnectionAbortedError ConnectionRefusedError ConnectionResetError EOFError
   FileExistsError FileNotFoundError FloatingPointError GeneratorExit ImportError
   IndentationError IndexError InterruptedError IsADirectoryError KeyError KeyboardInterrupt
   LookupError MemoryError ModuleNotFoundError NameError NotADirectoryError
   NotImplementedError OSError OverflowError PermissionError ProcessLookupError
   RecursionError ReferenceError RuntimeError StopAsyncIteration StopIteration SyntaxError
   SystemError SystemExit TabError TimeoutError TypeError UnboundLocalError UnicodeError
   UnicodeDecodeError UnicodeEncodeError ValueError ZeroDivisionError Warning UserWarning
   DeprecationWarning RuntimeWarning`.split(/\s+/),
);

const ID = String.raw`[\p{ID_Start}_][\p{ID_Continue}]*`;
const DIGITS = String.raw`\d(?:_?\d)*`;
const PY_NUMBER =
  String.raw`0[xX](?:_?[\da-fA-F])+|0[oO](?:_?[0-7])+|0[bB](?:_?[01])+` +
  String.raw`|(?:${DIGITS}(?:\.(?:${DIGITS})?)?|\.${DIGITS})(?:[eE][+-]?${DIGITS})?[jJ]?`;
// One Python token from lastIndex, after the blanks before it (group 1): a scan takes each
// token and its blanks in one step. The alternatives always match (the last one takes any
// character). The groups after the blanks, in order:
const PYTHON = new RegExp(
  String.raw`([^\S\r\n]*)(?:` +
    [
      String.raw`(#[^\r\n]*)`, // comment
      String.raw`((?:[rRbBuUfFtT]{1,2})?(?:'''|"""|'|"))`, // a string's prefix and opening quote
      `(${ID})`, // name
      `(${PY_NUMBER})`, // number
      String.raw`(@[ \t]*${ID}(?:[ \t]*\.[ \t]*${ID})*)`, // decorator (at a line's start only)
      String.raw`(\r\n?|\n)`, // line break
      String.raw`[^\s\p{ID_Continue}'"#@.]+`, // operators and brackets, plain
      String.raw`([\s\S])`, // anything else, "." among them
    ].join("|") +
    ")?", // nothing after the blanks: the text's end
  "yu",
);
const TYPE_ALIAS = new RegExp(String.raw`type[ \t]+${ID}[ \t]*[=\[]`, "yu");
const LINE_END = /[\r\n]/g;
const MAX_NESTING = 8; // f-strings in f-strings deeper than this are plain strings

// A Python source as tokens. code() reads statements and expressions, string() a literal,
// field() and spec() an f-string's replacement field and its format spec; each returns where
// it stopped, and they call one another for f-strings inside f-strings (at most MAX_NESTING
// deep, so that no input can exhaust the stack).
class Python {
  constructor(text) {
    this.s = text;
    this.out = new Tokens(text);
  }

  // From `pos` to the end of the text; or, inside a replacement field (`field`: {single, nest,
  // quote}), to the `}`, `:` or `!` that ends its expression outside brackets, or to the line's
  // end in a single-quoted f-string (an unterminated one stops there, as Python's does).
  code(pos, field) {
    const { s, out } = this;
    let lineStart = !field; // only blanks so far on this line
    let depth = 0; // brackets open inside a replacement field
    let afterDot = false; // the name is an attribute: never a builtin
    let naming = false; // the name follows def or class
    while (pos < s.length) {
      PYTHON.lastIndex = pos;
      const [, blanks, comment, opening, name, number, decorator, lineBreak] = PYTHON.exec(s);
      const start = pos + blanks.length;
      let end = PYTHON.lastIndex;
      const c = s[start];
      if (field && start < s.length) {
        if (depth === 0 && (c === "}" || c === ":" || (c === "!" && s[start + 1] !== "="))) return start;
        if (field.single && (c === "\n" || c === "\r")) return start;
        if (c === "(" || c === "[" || c === "{") depth += 1;
        else if ((c === ")" || c === "]" || c === "}") && depth > 0) depth -= 1;
      }
      if (lineBreak !== undefined) {
        lineStart = !field;
        pos = end;
        continue;
      }
      if (comment !== undefined && !field?.single) {
        out.mark("comment", start, end);
      } else if (opening !== undefined) {
        out.put("", start);
        end = this.string(end, opening, field ? field.nest : 0);
      } else if (name !== undefined) {
        const kind = naming ? "def" : this.nameKind(name, start, end, lineStart, afterDot);
        out.mark(kind, start, end);
        naming = kind === "keyword" && (name === "def" || name === "class");
        lineStart = false;
        afterDot = false;
        pos = end;
        continue;
      } else if (number !== undefined) {
        out.mark("number", start, end);
      } else if (decorator !== undefined && lineStart) {
        out.mark("decorator", start, end);
      } else if (field || comment !== undefined || decorator !== undefined) {
        // Plain, one character: a field counts its brackets one by one; a `#` in a
        // single-quoted f-string and a `@` that is an operator start nothing.
        end = Math.min(start + (s.codePointAt(start) > 0xffff ? 2 : 1), s.length);
      } // else plain: a run of operators and brackets, or one other character
      afterDot = c === "." && end === start + 1;
      naming = false;
      lineStart = false;
      pos = end;
    }
    return pos;
  }

  nameKind(name, start, end, lineStart, afterDot) {
    if (PY_KEYWORDS.has(name)) return "keyword";
    if (afterDot) return "";
    if (lineStart && (name === "match" || name === "case") && this.opensBlock(end)) return "keyword";
    if (lineStart && name === "type") {
      TYPE_ALIAS.lastIndex = start;
      if (TYPE_ALIAS.test(this.s)) return "keyword";
    }
    return PY_BUILTINS.has(name) ? "builtin" : "";
  }

  // `match` and `case` are keywords only where they start a block: first on their line, not
  // followed by what makes them a name (`match = ...`, `match.group(1)`), and on a line that
  // ends with a colon. Read once per line at most, so the scan stays linear.
  opensBlock(pos) {
    LINE_END.lastIndex = pos;
    const lineEnd = LINE_END.exec(this.s)?.index ?? this.s.length;
    const rest = this.s.slice(pos, lineEnd);
    return /^[ \t]*[^\s=.,:;)\]}]/.test(rest) && /:[ \t]*(?:#.*)?$/.test(rest);
  }

  // A string literal whose body starts at `i` (after `opening`: its prefix and quotes), to
  // after its closing quote, or where it stops unterminated: a single-quoted string at its
  // line's end, a triple-quoted one at the text's end. In an f-string (or t-string), `{` opens
  // a replacement field and `{{` is a brace. A backslash takes the next character (a raw
  // string's quote too: r"\"" is one string), CRLF as one.
  string(i, opening, nest) {
    const { s, out } = this;
    const quote = opening[opening.length - 1];
    const triple = opening.endsWith(quote.repeat(3));
    const closing = triple ? quote.repeat(3) : quote;
    const formatted = /[fFtT]/.test(opening) && nest < MAX_NESTING;
    while (i < s.length) {
      const c = s[i];
      if (c === "\\") {
        const next = s[i + 1];
        i += formatted && (next === "{" || next === "}") ? 1 : s.startsWith("\r\n", i + 1) ? 3 : 2;
      } else if (c === quote && s.startsWith(closing, i)) {
        out.put("string", i + closing.length);
        return i + closing.length;
      } else if (!triple && (c === "\n" || c === "\r")) {
        break;
      } else if (formatted && c === "{" && s[i + 1] !== "{") {
        out.put("string", i);
        i = this.field(i, { single: !triple, nest: nest + 1, quote: closing });
      } else {
        i += formatted && (c === "{" || c === "}") && s[i + 1] === c ? 2 : 1;
      }
    }
    i = Math.min(i, s.length);
    out.put("string", i);
    return i;
  }

  // A replacement field from its `{`: the expression as code, then `!r`, then `:spec`, then
  // `}`. Braces and conversion plain.
  field(i, field) {
    const { s, out } = this;
    out.put("", i + 1);
    i = this.code(i + 1, field);
    if (s[i] === "!") {
      i += 1;
      while (/[a-z]/i.test(s[i] ?? "")) i += 1;
      out.put("", i);
    }
    if (s[i] === ":") {
      out.put("", i + 1);
      i = this.spec(i + 1, field);
    }
    if (s[i] === "}") {
      i += 1;
      out.put("", i);
    }
    return i;
  }

  // A format spec (`>10`, `.{digits}f`): literal text up to the field's `}`, with fields of
  // its own; it stops early at the string's closing quote or, single-quoted, its line's end.
  spec(i, field) {
    const { s, out } = this;
    while (i < s.length) {
      const c = s[i];
      if (c === "}" || s.startsWith(field.quote, i)) break;
      if (field.single && (c === "\n" || c === "\r")) break;
      if (c === "{" && field.nest < MAX_NESTING) {
        out.put("string", i);
        i = this.field(i, { ...field, nest: field.nest + 1 });
      } else {
        i += 1;
      }
    }
    out.put("string", i);
    return i;
  }
}

function python(text) {
  const scanner = new Python(text);
  scanner.code(0, null);
  return scanner.out.list();
}

// --- the other languages: a few rules each ---------------------------------------------------

// A language as rules [kind, pattern] tried in order at each position (one sticky union, with
// the `m` flag: ^ and $ are a line's start and end, (?![\s\S]) the text's end). Text no rule
// takes goes plain a word or a character at a time; `words` may give a word a kind. A rule's
// kind may instead be a function (text, start, end, out) that puts the tokens itself and
// returns where it stopped (markdown's fenced code). Patterns may hold groups of their own.
function ruled(rules, words = () => "") {
  const groups = rules.map(([, pattern]) => new RegExp(`${pattern}|`, "u").exec("").length - 1);
  const union = new RegExp(
    [...rules.map(([, pattern]) => `(${pattern})`), String.raw`([\p{L}\p{N}_]+)`, String.raw`[\s\S]`].join("|"),
    "myu",
  );
  const WORD = rules.length;
  const index = []; // the union's group of each rule, then of the word
  let group = 1;
  for (const count of [...groups, 0]) {
    index.push(group);
    group += 1 + count;
  }
  return (text) => {
    const out = new Tokens(text);
    let pos = 0;
    while (pos < text.length) {
      union.lastIndex = pos;
      const match = union.exec(text);
      let end = union.lastIndex;
      if (end <= pos) end = pos + (text.codePointAt(pos) > 0xffff ? 2 : 1); // a rule matched ""
      let rule = 0;
      while (rule <= WORD && match[index[rule]] === undefined) rule += 1;
      if (rule < WORD) {
        const kind = rules[rule][0];
        if (typeof kind === "function") end = Math.max(kind(text, pos, end, out), end);
        else out.mark(kind, pos, end);
      } else if (rule === WORD) {
        out.mark(words(match[0]), pos, end);
      }
      pos = end;
    }
    return out.list();
  };
}

const wordsIn = (list) => new Set(list.split(/\s+/));
const END = String.raw`(?![\s\S])`; // the text's end, under the m flag

const toml = (() => {
  const bare = String.raw`(?:[A-Za-z0-9_-]+|"(?:[^"\\\r\n]|\\[^\r\n])*"|'[^'\r\n]*')`;
  const literals = wordsIn("true false");
  return ruled(
    [
      ["comment", String.raw`#[^\r\n]*`],
      ["keyword", String.raw`^[ \t]*\[\[?[^\[\]\r\n]*\]\]?(?=[ \t]*(?:#|$))`], // [table]
      ["def", String.raw`(?<=^[ \t]*|[{,][ \t]*)${bare}(?:[ \t]*\.[ \t]*${bare})*(?=[ \t]*=)`], // key
      ["string", String.raw`"""(?:[^"\\]|\\[\s\S]?|"(?!""))*(?:"""|${END})`],
      ["string", String.raw`'''(?:[^']|'(?!''))*(?:'''|${END})`],
      ["string", String.raw`"(?:[^"\\\r\n]|\\[^\r\n])*"?|'[^'\r\n]*'?`],
      [
        "number",
        String.raw`\d{4}-\d{2}-\d{2}(?:[Tt ]\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?)?(?:[Zz]|[+-]\d{2}:\d{2})?` +
          String.raw`|\d{2}:\d{2}:\d{2}(?:\.\d+)?`,
      ],
      ["number", String.raw`[+-]?(?:0x[\da-fA-F_]+|0o[0-7_]+|0b[01_]+|(?:inf|nan)\b|\d[\d_]*(?:\.[\d_]+)?(?:[eE][+-]?[\d_]+)?)`],
    ],
    (word) => (literals.has(word) ? "keyword" : ""),
  );
})();

const ini = (() => {
  const literals = wordsIn("true false yes no on off True False Yes No On Off TRUE FALSE YES NO ON OFF");
  return ruled(
    [
      ["comment", String.raw`^[ \t]*[;#][^\r\n]*`],
      ["keyword", String.raw`^[ \t]*\[[^\]\r\n]*\]`], // [section]
      ["def", String.raw`(?<=^[ \t]*)[^\s=:;#\[][^=:\r\n]*?(?=[ \t]*[=:])`], // key
      ["number", String.raw`\b\d+(?:\.\d+)?\b`],
    ],
    (word) => (literals.has(word) ? "keyword" : ""),
  );
})();

const json = (() => {
  const literals = wordsIn("true false null");
  const string = String.raw`"(?:[^"\\\r\n]|\\[^\r\n])*"`;
  return ruled(
    [
      ["def", String.raw`${string}(?=\s*:)`], // key
      ["string", `${string}?`],
      ["number", String.raw`-?(?:0|[1-9]\d*)(?:\.\d+)?(?:[eE][+-]?\d+)?`],
      ["comment", String.raw`\/\/[^\r\n]*|\/\*[\s\S]*?(?:\*\/|${END})`], // JSON with comments
    ],
    (word) => (literals.has(word) ? "keyword" : ""),
  );
})();

const yaml = (() => {
  const start = String.raw`(?<=^|[ \t:,\[{-])`; // where a scalar may start
  const scalarEnd = String.raw`(?=[ \t]*(?:$|[,\]}#]))`; // the scalar is all of it
  return ruled([
    ["comment", String.raw`(?<=^|[ \t])#[^\r\n]*`],
    ["comment", String.raw`^(?:---|\.\.\.)(?=[ \t]|$)`], // document markers
    [
      "def",
      String.raw`(?<=^[ \t]*(?:-[ \t]+)?)(?:"(?:[^"\\\r\n]|\\[^\r\n])*"|'(?:[^'\r\n]|'')*'|[^\s#'"{}\[\],&*!|>%@\x60-][^\r\n#]*?)(?=[ \t]*:(?:[ \t]|$))`,
    ], // key
    ["string", String.raw`${start}(?:"(?:[^"\\\r\n]|\\[^\r\n])*"?|'(?:[^'\r\n]|'')*'?)`],
    ["decorator", String.raw`(?<=^|[ \t])(?:[&*][^\s,\[\]{}]+|!{1,2}[^\s,\[\]{}]*)`], // anchors, aliases, tags
    ["keyword", String.raw`${start}(?:true|false|null|True|False|Null|TRUE|FALSE|NULL|~)${scalarEnd}`],
    [
      "number",
      String.raw`${start}[-+]?(?:0x[\da-fA-F]+|0o[0-7]+|\d[\d_]*(?:\.\d*)?(?:[eE][-+]?\d+)?|\.(?:inf|Inf|INF|nan|NaN|NAN))${scalarEnd}`,
    ],
  ]);
})();

const sql = (() => {
  const keywords = wordsIn(
    `add all alter and any as asc begin between by cascade case check commit constraint create
     cross current_date current_timestamp database default delete desc distinct do drop else end
     exists extension false filter foreign from full function grant group having if ilike in
     index inner insert intersect into is join key language left like limit materialized not
     notify null nulls offset on or order outer over partition primary procedure references
     replace returning returns revoke right rollback schema select sequence set table then to
     transaction trigger true truncate union unique update using values view when where window
     with`,
  );
  const types = wordsIn(
    `bigint bigserial bool boolean bytea char character date decimal double float int integer
     interval json jsonb numeric real serial smallint text time timestamp timestamptz uuid
     varchar xid8 avg coalesce count greatest least max min now nullif sum`,
  );
  return ruled(
    [
      ["comment", String.raw`--[^\r\n]*|\/\*[\s\S]*?(?:\*\/|${END})`],
      ["string", String.raw`[eE]?'(?:[^']|'')*'?`],
      ["number", String.raw`\$\d+`], // a parameter
      ["string", String.raw`\$(?<tag>[A-Za-z_]\w*)?\$[\s\S]*?(?:\$\k<tag>\$|${END})`], // $$ body $$
      ["", String.raw`"(?:[^"]|"")*"?`], // a quoted name: nothing in it is a keyword
    ],
    (word) => {
      const lower = word.toLowerCase();
      if (/^\d/.test(word)) return "number";
      return keywords.has(lower) ? "keyword" : types.has(lower) ? "builtin" : "";
    },
  );
})();

const shell = (() => {
  const keywords = wordsIn(
    `if then else elif fi for while until do done case esac function in select time return exit
     export local readonly declare source set unset shift break continue`,
  );
  return ruled(
    [
      ["comment", String.raw`(?<=^|[ \t;|&(])#[^\r\n]*`],
      ["string", String.raw`\$?'[^']*'?`],
      ["string", String.raw`"(?:[^"\\]|\\[\s\S])*"?`],
      ["builtin", String.raw`\$(?:\{[^}\r\n]*\}?|[A-Za-z_]\w*|\d|[@*#?$!-])`], // a variable
    ],
    (word) => (keywords.has(word) ? "keyword" : /^\d+$/.test(word) ? "number" : ""),
  );
})();

// Markdown's fenced code from its opening line: the fences as comments, the code in the
// language its info string names (a plain string when unknown, and markdown in markdown
// too, so that fences cannot nest the scanner), to the closing fence or the text's end.
function fence(text, start, end, out) {
  const opening = text.slice(start, end);
  const marks = opening.trimStart().match(/^(`+|~+)/)[0];
  const language = opening.trimStart().slice(marks.length).trim().split(/\s+/)[0].toLowerCase();
  out.mark("comment", start, end);
  const closing = new RegExp(String.raw`^ {0,3}${marks[0] === "`" ? "`" : "~"}{${marks.length},}[ \t]*$`, "mg");
  closing.lastIndex = end;
  const close = closing.exec(text);
  const codeEnd = close ? close.index : text.length;
  const scan = scanner(language);
  if (scan && scan !== markdown) {
    let at = end;
    for (const [kind, piece] of scan(text.slice(end, codeEnd))) out.mark(kind, at, (at += piece.length));
  } else {
    out.mark("string", end, codeEnd);
  }
  if (!close) return codeEnd;
  out.mark("comment", close.index, closing.lastIndex);
  return closing.lastIndex;
}

const markdown = ruled([
  [fence, String.raw`^ {0,3}(?:\x60{3,}(?=[^\x60\r\n]*$)|~{3,})[^\r\n]*`],
  ["def", String.raw`^ {0,3}#{1,6}(?=[ \t]|$)[^\r\n]*`], // heading
  ["comment", String.raw`^ {0,3}(?:(?:-[ \t]*){3,}|(?:\*[ \t]*){3,}|(?:_[ \t]*){3,})$`], // rule
  ["comment", String.raw`^ {0,3}>[^\r\n]*`], // quote
  ["comment", String.raw`<!--[\s\S]*?(?:-->|${END})`],
  ["number", String.raw`^[ \t]*(?:[-*+]|\d{1,9}[.)])(?=[ \t])`], // a list item's marker
  ["string", String.raw`\x60\x60[^\r\n]+?\x60\x60|\x60[^\x60\r\n]+\x60`], // code span
  ["builtin", String.raw`!?\[[^\[\]\r\n]*\]\([^()\r\n]*\)|<https?:\/\/[^>\s]*>`], // link
  ["keyword", String.raw`\*\*(?=\S)[^*\r\n]*\*\*|__(?=\S)[^_\r\n]*__`], // strong
  ["keyword", String.raw`\*(?=[^\s*])[^*\r\n]*\*|\b_(?=[^\s_])[^_\r\n]*_\b`], // emphasis
]);

const SCANNERS = { python, toml, markdown, json, yaml, ini, sql, shell };
const ALIASES = {
  py: "python", python3: "python", pyi: "python", md: "markdown", yml: "yaml", cfg: "ini",
  sh: "shell", bash: "shell", zsh: "shell", jsonc: "json", postgresql: "sql", psql: "sql",
};

function scanner(language) {
  const name = String(language ?? "").toLowerCase();
  return Object.hasOwn(SCANNERS, name) ? SCANNERS[name]
    : Object.hasOwn(ALIASES, name) ? SCANNERS[ALIASES[name]] : null;
}

export function tokens(text, language) {
  if (typeof text !== "string") throw new TypeError(`tokens() takes a string, not ${typeof text}`);
  if (text === "") return [];
  const scan = scanner(language);
  if (!scan) return [["", text]];
  try {
    return scan(text);
  } catch (error) {
    // A scanner's bug must cost the colours, never the text.
    console.error(`highlight.js: ${language} scanner failed`, error);
    return [["", text]];
  }
}

export function highlight(text, language) {
  const fragment = document.createDocumentFragment();
  for (const [kind, piece] of tokens(text, language)) {
    fragment.appendChild(kind ? span(kind, piece) : document.createTextNode(piece));
  }
  return fragment;
}

function span(kind, text) {
  const element = document.createElement("span");
  element.className = `tok-${kind}`;
  element.appendChild(document.createTextNode(text));
  return element;
}
