"""JSON decoding and encoding without importing the ``json`` package.

``import json`` pulls in ``re`` and ``enum`` and costs ~4.5 ms, paid on every runtime call, while the
C accelerator ``_json`` that does the real work costs ~0.4 ms. This module drives the C scanner and
encoder directly. If ``_json`` is ever missing, it falls back to the ``json`` package.
"""

from __future__ import annotations

TYPE_CHECKING = False  # typing costs ~6 ms to import; annotations are never evaluated
if TYPE_CHECKING:
    from typing import Any


try:
    import _json
except ImportError:  # pragma: no cover - every CPython build ships _json
    _json = None


class JSONError(ValueError):
    """The text is not valid JSON; the message says where."""


def _reject_constant(name: str) -> Any:
    raise JSONError(f"invalid JSON value {name}")


class _ScannerContext:
    # The attributes _json.make_scanner reads from a json.JSONDecoder.
    strict = True
    object_hook = None
    object_pairs_hook = None
    parse_float = float
    parse_int = int
    parse_constant = staticmethod(_reject_constant)
    memo: dict = {}


_WHITESPACE = " \t\n\r"

if _json is not None:
    _scan = _json.make_scanner(_ScannerContext())
    _encode_compact = _json.make_encoder(
        None, None, _json.encode_basestring, None, ":", ",", False, False, False
    )


def loads(text: str | bytes) -> Any:
    """Parse one JSON document; raise JSONError with the offset of the first problem."""
    if isinstance(text, bytes | bytearray):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as err:
            raise JSONError(f"not UTF-8 text: {err}") from None
    if _json is None:  # pragma: no cover
        import json

        try:
            return json.loads(text)
        except ValueError as err:
            raise JSONError(str(err)) from None
    start = len(text) - len(text.lstrip(_WHITESPACE))
    try:
        value, end = _scan(text, start)
    except RecursionError:
        raise JSONError("JSON nested too deeply") from None
    except JSONError:
        raise
    except (StopIteration, ValueError, SystemError):
        # Only the error path pays for the json package: its message says line and column.
        raise JSONError(_describe_error(text)) from None
    if text[end:].strip(_WHITESPACE):
        raise JSONError(f"extra data after the JSON value at offset {end}")
    return value


def _describe_error(text: str) -> str:
    import json

    try:
        json.loads(text)
    except ValueError as err:
        return str(err)
    except RecursionError:
        return "JSON nested too deeply"
    return "invalid JSON"


def dumps(value: Any) -> str:
    """Compact JSON (no spaces), UTF-8 characters kept as they are, as Go's encoding/json writes."""
    if _json is None:  # pragma: no cover
        import json

        return json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    return "".join(_encode_compact(value, 0))


def dumps_indent(value: Any, indent: str = "  ") -> str:
    """Indented JSON, the shape of Go's json.MarshalIndent (used by `state`)."""
    return "\n".join(_indent_lines(value, indent, ""))


def _indent_lines(value: Any, indent: str, prefix: str) -> list[str]:
    if isinstance(value, dict) and value:
        inner = prefix + indent
        lines = ["{"]
        items = list(value.items())
        for i, (key, item) in enumerate(items):
            sub = _indent_lines(item, indent, inner)
            sub[0] = f"{inner}{dumps(str(key))}: {sub[0]}"
            if i < len(items) - 1:
                sub[-1] += ","
            lines.extend(sub)
        lines.append(prefix + "}")
        return lines
    if isinstance(value, list | tuple) and value:
        inner = prefix + indent
        lines = ["["]
        for i, item in enumerate(value):
            sub = _indent_lines(item, indent, inner)
            sub[0] = inner + sub[0]
            if i < len(value) - 1:
                sub[-1] += ","
            lines.extend(sub)
        lines.append(prefix + "]")
        return lines
    return [dumps(value)]
