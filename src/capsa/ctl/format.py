"""--format as podman reads it: `json`, or a Go template (the subset podman users write).

Supported: fields `{{.ID}}`, `{{.State.Status}}`, `{{.}}`; functions `json`, `upper`, `lower`,
`title`, `index`, `join`, `len`, `truncate`, `printf` (%s %d %v %q), pipelines (`{{.Labels | json}}`),
`{{range .X}}...{{end}}` and `{{if .X}}...{{else}}...{{end}}`; a `table ` prefix makes an aligned
table whose header names the fields (podman's headers: `{{.ID}}` is CONTAINER ID in ps), its
columns aligned as podman's tabwriter does (minwidth 12, padding 2); `\\t` and `\\n` typed on a
command line are a tab and a newline, as in podman.

Values print as Go prints them: a list as [a b], a map as map[k:v], nothing as <no value>.
"""

from __future__ import annotations

import json


class TemplateError(Exception):
    pass


def _error(message: str) -> Exception:
    from capsa.manager.errors import ManagerError

    return ManagerError(f"template: {message}")


# --- values as Go prints them ----------------------------------------------------------------------

def go_str(value) -> str:
    if value is None:
        return "<no value>"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, (list, tuple)):
        return "[" + " ".join(go_str(v) for v in value) + "]"
    if isinstance(value, dict):
        return "map[" + " ".join(f"{k}:{go_str(v)}" for k, v in sorted(value.items())) + "]"
    return str(value)


# --- parsing -----------------------------------------------------------------------------------------

def _tokens(text: str) -> list[str]:
    """An action's words: strings ("..." with escapes, `...`), |, (, ), and bare words."""
    tokens, i = [], 0
    while i < len(text):
        c = text[i]
        if c.isspace():
            i += 1
        elif c in "|()":
            tokens.append(c)
            i += 1
        elif c == '"':
            j = i + 1
            while j < len(text) and text[j] != '"':
                j += 2 if text[j] == "\\" else 1
            if j >= len(text):
                raise _error(f"unterminated string in {{{{{text}}}}}")
            tokens.append(text[i:j + 1])
            i = j + 1
        elif c == "`":
            j = text.find("`", i + 1)
            if j < 0:
                raise _error(f"unterminated raw string in {{{{{text}}}}}")
            tokens.append('"' + text[i + 1:j].replace("\\", "\\\\").replace('"', '\\"') + '"')
            i = j + 1
        else:
            j = i
            while j < len(text) and not text[j].isspace() and text[j] not in "|()":
                j += 1
            tokens.append(text[i:j])
            i = j
    return tokens


def _parse(template: str) -> list:
    """The template as a tree: strings, ("action", tokens), ("range", tokens, body),
    ("if", tokens, body, else_body)."""
    nodes: list = []
    stack: list = []
    current = nodes
    i = 0
    while i < len(template):
        start = template.find("{{", i)
        if start < 0:
            current.append(template[i:])
            break
        if start > i:
            current.append(template[i:start])
        end = template.find("}}", start)
        if end < 0:
            raise _error("unclosed action: no }} after {{")
        inner = template[start + 2:end]
        # {{- and -}} trim spaces around, as Go's
        if inner.startswith("-") and current and isinstance(current[-1], str):
            current[-1] = current[-1].rstrip()
        trim_after = inner.endswith("-")
        inner = inner.strip("-").strip()
        i = end + 2
        if trim_after:
            while i < len(template) and template[i].isspace():
                i += 1
        words = _tokens(inner)
        if not words:
            raise _error("empty action {{}}")
        if words[0] in ("range", "if", "with"):
            node = [words[0], words[1:], [], None]
            current.append(node)
            stack.append((current, node))
            current = node[2]
        elif words[0] == "else":
            if not stack or stack[-1][1][0] == "range" and False:
                raise _error("{{else}} outside {{if}}")
            if not stack:
                raise _error("{{else}} outside {{if}}")
            node = stack[-1][1]
            node[3] = []
            current = node[3]
        elif words[0] == "end":
            if not stack:
                raise _error("{{end}} without {{range}} or {{if}}")
            current, _ = stack.pop()
        else:
            current.append(("action", words))
    if stack:
        raise _error(f"{{{{{stack[-1][1][0]}}}}} without {{{{end}}}}")
    return nodes


# --- evaluating --------------------------------------------------------------------------------------

def _field(value, path: str):
    if path == ".":
        return value
    for part in path.lstrip(".").split("."):
        if isinstance(value, dict):
            if part in value:
                value = value[part]
                continue
            lowered = {k.lower(): k for k in value if isinstance(k, str)}
            if part.lower() in lowered:
                value = value[lowered[part.lower()]]
                continue
            raise _error(f"can't evaluate field {part}")
        raise _error(f"can't evaluate field {part} in type {type(value).__name__}")
    return value


def _literal(token: str):
    if token.startswith('"'):
        return json.loads(token)
    if token in ("true", "false"):
        return token == "true"
    if token == "nil":
        return None
    try:
        return int(token)
    except ValueError:
        try:
            return float(token)
        except ValueError:
            return None


def _printf(fmt: str, *args) -> str:
    out, i, n = [], 0, 0
    while i < len(fmt):
        if fmt[i] == "%" and i + 1 < len(fmt):
            verb = fmt[i + 1]
            if verb == "%":
                out.append("%")
            else:
                arg = args[n] if n < len(args) else None
                n += 1
                if verb == "q":
                    out.append(json.dumps(go_str(arg)))
                elif verb == "d":
                    out.append(str(int(arg or 0)))
                else:
                    out.append(go_str(arg))
            i += 2
        else:
            out.append(fmt[i])
            i += 1
    return "".join(out)


def _truncate(text, length):
    return go_str(text)[:int(length)]


FUNCTIONS = {
    "json": lambda v: json.dumps(v),
    "upper": lambda v: go_str(v).upper(),
    "lower": lambda v: go_str(v).lower(),
    "title": lambda v: go_str(v).title(),
    "len": lambda v: len(v or ()),
    "index": lambda v, *keys: _index(v, keys),
    "join": lambda v, sep: sep.join(go_str(x) for x in (v or [])),
    "truncate": _truncate,
    "printf": _printf,
    "print": lambda *v: " ".join(go_str(x) for x in v),
    "println": lambda *v: " ".join(go_str(x) for x in v) + "\n",
    "eq": lambda a, *b: any(a == x for x in b),
    "ne": lambda a, b: a != b,
    "not": lambda v: not v,
}


def _index(value, keys):
    for key in keys:
        if isinstance(value, dict):
            value = value.get(key)
        elif isinstance(value, (list, tuple)) and isinstance(key, int) and 0 <= key < len(value):
            value = value[key]
        else:
            return None
    return value


def _evaluate(tokens: list[str], dot):
    """A pipeline: commands separated by |, each a function with arguments or one operand."""
    commands: list[list[str]] = [[]]
    depth = 0
    for token in tokens:
        if token == "|" and depth == 0:
            commands.append([])
            continue
        depth += token == "("
        depth -= token == ")"
        commands[-1].append(token)
    value = _NOTHING
    for command in commands:
        if not command:
            raise _error("empty command in a pipeline")
        value = _command(command, dot, value)
    return value


_NOTHING = object()


def _operand(tokens: list[str], i: int, dot):
    token = tokens[i]
    if token == "(":
        depth, j = 1, i + 1
        while j < len(tokens) and depth:
            depth += tokens[j] == "("
            depth -= tokens[j] == ")"
            j += 1
        return _evaluate(tokens[i + 1:j - 1], dot), j
    if token.startswith("."):
        return _field(dot, token), i + 1
    if token.startswith("$"):
        return _field(dot, "." + token[1:].lstrip(".")) if token != "$" else dot, i + 1
    if token in FUNCTIONS:
        return FUNCTIONS[token](), i + 1
    value = _literal(token)
    if value is None and token != "nil":
        raise _error(f'function "{token}" not defined')
    return value, i + 1


def _command(command: list[str], dot, piped):
    name = command[0]
    if name in FUNCTIONS and (len(command) > 1 or piped is not _NOTHING):
        args, i = [], 1
        while i < len(command):
            value, i = _operand(command, i, dot)
            args.append(value)
        if piped is not _NOTHING:
            args.append(piped)
        try:
            return FUNCTIONS[name](*args)
        except TypeError:
            raise _error(f"wrong number of arguments for {name}") from None
    if piped is not _NOTHING:
        raise _error(f"cannot pipe into {name}")
    value, i = _operand(command, 0, dot)
    if i != len(command):
        raise _error(f"unexpected {' '.join(command[i:])}")
    return value


def _render(nodes: list, dot) -> str:
    out = []
    for node in nodes:
        if isinstance(node, str):
            out.append(node)
        elif node[0] == "action":
            value = _evaluate(node[1], dot)
            out.append(value if isinstance(value, str) else go_str(value))
        elif node[0] == "range":
            items = _evaluate(node[1], dot)
            if isinstance(items, dict):
                items = [items[k] for k in sorted(items)]
            if items:
                for item in items:
                    out.append(_render(node[2], item))
            elif node[3] is not None:
                out.append(_render(node[3], dot))
        elif node[0] in ("if", "with"):
            value = _evaluate(node[1], dot)
            if value:
                out.append(_render(node[2], value if node[0] == "with" else dot))
            elif node[3] is not None:
                out.append(_render(node[3], dot))
    return "".join(out)


# --- what commands call ---------------------------------------------------------------------------------

def unescape(template: str) -> str:
    return template.replace("\\t", "\t").replace("\\n", "\n")


def header_of(template: str, headers: dict[str, str] | None = None) -> str:
    """The header line of a `table` template: each {{.Field}} becomes its header (podman's
    names where given, else the field's name in capitals, words split: CreatedAt -> CREATED AT)."""
    import re

    headers = headers or {}

    def name(match) -> str:
        field = match.group(1)
        if field in headers:
            return headers[field]
        words = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", " ", field.split(".")[-1])
        return words.upper()

    line = re.sub(r"\{\{-?\s*(?:\w+\s+)?\.([\w.]+)[^}]*\}\}", name, template)
    return re.sub(r"\{\{[^}]*\}\}", "", line)


def render(template: str, items: list, headers: dict[str, str] | None = None) -> str:
    """Each item through the template, one line each (a newline added if the template has
    none); a `table` template gets its header and aligned columns."""
    template = unescape(template)
    table = template.startswith("table")
    if table:
        template = template[5:].lstrip()
        if not template:
            raise _error("table needs a template after it")
    nodes = _parse(template)
    lines = [_render(nodes, item) for item in items]
    if table:
        lines = [header_of(template, headers)] + lines
    text = "".join(line if line.endswith("\n") else line + "\n" for line in lines)
    return align(text) if table else text  # podman aligns only a table; elsewhere a tab stays a tab


def align(text: str, padding: int = 2, minwidth: int = 12) -> str:
    """Go's tabwriter as podman sets it (minwidth 12, padding 2): tab-separated cells in aligned
    columns, each at least 12 wide."""
    rows = [line.split("\t") for line in text.split("\n")]
    widths: dict[int, int] = {}
    for row in rows:
        for i, cell in enumerate(row[:-1]):
            widths[i] = max(widths.get(i, 0), len(cell) + padding, minwidth)
    out = []
    for row in rows:
        cells = [cell.ljust(widths[i]) for i, cell in enumerate(row[:-1])]
        out.append("".join(cells) + row[-1])
    return "\n".join(out)


def is_json(fmt: str | None) -> bool:
    return fmt is not None and fmt.strip() in ("json", "{{json .}}")


def dump_json(value) -> str:
    return json.dumps(value, indent=4) + "\n"


def output(fmt: str | None, items: list, headers: dict[str, str] | None = None, *, single: bool = False) -> str:
    """--format FMT of `items`: json (a list; `single` one object per item, as inspect does not),
    or a template."""
    if fmt is None:
        raise ValueError("no format")
    if is_json(fmt):
        return dump_json(items)
    return render(fmt, items, headers)
