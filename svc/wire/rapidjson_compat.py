"""An imitation of rapidjson 1.1.0, the JSON library TF Serving links, as far as TF Serving's REST API shows it:
parse errors with rapidjson's texts and byte offsets, the types it names values by, its writer's string
escaping and number format, and the `PrettyWriter` dump TF Serving puts into error texts. Used by
`svc/wire/json_tensor.py` (predict) and `svc/wire/json_examples.py` (classify/regress, GET bodies).

Parsing follows rapidjson as TF Serving configures it (iterative parser, `NaN`/`Infinity` accepted, parsing
stops after the first value), on top of Python's `json` decoder. Deliberate deviations from rapidjson, all on
odd input: `Inf`, `-Inf` and `-NaN` (rapidjson takes them, Python's json does not) are `Invalid value.`; a lone
high-surrogate escape (`\\ud800`) is taken (as CESU-8 bytes), not refused; numbers beyond the double range
become +-Infinity instead of `Number too big to be stored in double.` (integers of more than 4300 digits
excepted); of duplicate object keys the last counts (rapidjson keeps all, finds the first); documents nested
deeper than Python's recursion limit are refused (rapidjson has no limit).
"""

from __future__ import annotations

import json
import math
import re
import sys
from itertools import chain

from svc.errors import ServingError, invalid_argument
from svc.types import Json

__all__ = [
    "as_double",
    "debug_string",
    "encode",
    "format_error_status",
    "json_type",
    "parse_json_object",
    "quote",
    "utf8",
]



# --- reading JSON --------------------------------------------------------------------------------------

_DECODER = json.JSONDecoder()
_WHITESPACE = " \t\n\r"
_STRING_OR_BRACKET = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"|[][{}]')
_LITERALS = {"t": "true", "f": "false", "n": "null", "N": "NaN", "I": "Infinity"}


def parse_json_object(body: bytes) -> dict[str, Json]:
    """TF Serving's `ParseJson`: the request body as a JSON object, or INVALID_ARGUMENT with its texts."""
    if not body:
        raise invalid_argument("JSON Parse error: The document is empty")
    nul = body.find(b"\0")  # rapidjson's stream ends at the first NUL byte
    if nul >= 0:
        body = body[:nul]
    bom = 0
    for byte in b"\xef\xbb\xbf":  # rapidjson skips each BOM byte on its own
        if bom < len(body) and body[bom] == byte:
            bom += 1
    # Bytes that are not UTF-8 survive as lone surrogates and are restored by `utf8()` (rapidjson does not
    # validate encodings: such strings reach the tensor as the raw bytes).
    text = body[bom:].decode("utf-8", "surrogateescape")
    start = len(text) - len(text.lstrip(_WHITESPACE))

    def error(message: str, pos: int) -> ServingError:
        offset = bom + len(text[:pos].encode("utf-8", "surrogateescape"))
        return invalid_argument(f"JSON Parse error: {message} at offset: {offset}")

    if start == len(text):
        raise error("The document is empty.", start)
    try:
        doc, _ = _DECODER.raw_decode(text, start)  # trailing data is ignored (kParseStopWhenDoneFlag)
    except json.JSONDecodeError as e:
        raise error(*_rapidjson_error(text, e.msg, e.pos, start)) from None
    except ValueError:  # an integer beyond Python's digit limit
        match = re.search(rf"-?\d{{{sys.get_int_max_str_digits() + 1}}}", text)
        raise error("Number too big to be stored in double.", match.start() if match else 0) from None
    except RecursionError:
        raise invalid_argument("JSON Parse error: The document is nested too deeply.") from None
    if not isinstance(doc, dict):
        raise format_error_status(doc, "Is not object")
    return doc


def _rapidjson_error(text: str, msg: str, pos: int, start: int) -> tuple[str, int]:
    """rapidjson's message and error position for the error Python's decoder reports at `pos`."""
    char = text[pos : pos + 1]
    if msg.startswith("Expecting value"):
        if pos == start and char and char in "]},:":
            return "The document is empty.", pos  # rapidjson's error for a bad first token
        return "Invalid value.", _invalid_value_end(text, pos)
    if msg.startswith(("Expecting property name", "Illegal trailing comma before end of object")):
        return "Missing a name for object member.", pos
    if msg.startswith("Illegal trailing comma"):
        return "Invalid value.", pos
    if msg.startswith("Expecting ':'"):
        return "Missing a colon after a name of object member.", pos
    if msg.startswith("Expecting ','"):
        number = _number_before(text, pos)
        if char == "." and number and "." not in number and "e" not in number.lower():
            return "Miss fraction part in number.", pos + 1
        if char in ("e", "E") and number and "e" not in number.lower():
            return "Miss exponent in number.", pos + 1 + (text[pos + 1 : pos + 2] in ("+", "-"))
        if _innermost_container(text, pos) == "{":
            return "Missing a comma or '}' after an object member.", pos
        return "Missing a comma or ']' after an array element.", pos
    if msg.startswith("Unterminated string"):
        return "Missing a closing quotation mark in string.", len(text)
    if msg.startswith(("Invalid control character", "Invalid \\escape")):
        return "Invalid escape character in string.", pos
    if msg.startswith("Invalid \\u"):
        return "Incorrect hex digit after \\u escape in string.", max(text.rfind("\\", 0, pos + 1), 0)
    return "Invalid value.", pos


def _invalid_value_end(text: str, pos: int) -> int:
    """Where rapidjson stops reading a bad value: after the part of a literal (or `-`) that matched."""
    if text[pos : pos + 1] == "-":
        pos += 1
        if text[pos : pos + 1] not in ("I", "N"):
            return pos
    literal = _LITERALS.get(text[pos : pos + 1])
    if literal is None:
        return pos
    matched = 1
    while matched < len(literal) and text[pos + matched : pos + matched + 1] == literal[matched]:
        matched += 1
    return pos + matched


def _number_before(text: str, pos: int) -> str:
    start = pos
    while start > 0 and text[start - 1] in "0123456789.eE+-":
        start -= 1
    return text[start:pos] if any(c.isdigit() for c in text[start:pos]) else ""


def _innermost_container(text: str, pos: int) -> str:
    """`[` or `{`: the container still open at `pos` (error path only)."""
    stack: list[str] = []
    for match in _STRING_OR_BRACKET.finditer(text, 0, pos):
        token = match.group()
        if token in ("[", "{"):
            stack.append(token)
        elif token in ("]", "}") and stack:
            stack.pop()
    return stack[-1] if stack else "["


def utf8(text: str) -> bytes:
    """A parsed JSON string as the bytes the client sent (see `parse_json_object`)."""
    try:
        return text.encode()
    except UnicodeEncodeError:
        return b"".join(
            c.encode("utf-8", "surrogateescape" if "\udc80" <= c <= "\udcff" else "surrogatepass")
            for c in text
        )


def as_double(value: float) -> float:
    """A JSON number as a double; integers beyond the double range become +-inf (rapidjson refuses them)."""
    try:
        return float(value)
    except OverflowError:
        return math.inf if value > 0 else -math.inf


def json_type(value: Json) -> str:
    """rapidjson's type of a value, as TF Serving names it."""
    if value is None:
        return "Null"
    if value is True:
        return "True"
    if value is False:
        return "False"
    if isinstance(value, dict):
        return "Object"
    if isinstance(value, list):
        return "Array"
    return "String" if isinstance(value, str) else "Number"


# --- writing JSON the way rapidjson does ---------------------------------------------------------------

_ESCAPES = {i: f"\\u{i:04X}" for i in range(0x20)} | {
    0x08: "\\b",
    0x09: "\\t",
    0x0A: "\\n",
    0x0C: "\\f",
    0x0D: "\\r",
    0x22: '\\"',
    0x5C: "\\\\",
}
_DEBUG_LIMIT = 256  # TF Serving's kMaxJsonDebugStringBytes


def quote(text: str) -> str:
    """A JSON string literal escaped like rapidjson's writer (non-ASCII characters are not escaped)."""
    return '"' + text.translate(_ESCAPES) + '"'


def encode(text: str) -> bytes:
    """A response body; characters that are not valid UTF-8 (raw request bytes) become `?`."""
    return text.encode("utf-8", "replace")


def _rapidjson_double(value: float) -> str:
    """rapidjson's `Writer::Double` for a finite value: shortest digits, `1.0`, `1e-7`, `1.5e300`."""
    if value == 0:
        return "-0.0" if math.copysign(1.0, value) < 0 else "0.0"
    sign = "-" if value < 0 else ""
    mantissa, _, exponent = repr(abs(value)).partition("e")
    whole, _, fraction = mantissa.partition(".")
    digits = (whole + fraction).lstrip("0")
    k = int(exponent or 0) - len(fraction) + len(digits) - len(digits.rstrip("0"))
    digits = digits.rstrip("0")
    kk = len(digits) + k  # the decimal point sits after `kk` digits
    if k >= 0 and kk <= 21:
        text = digits + "0" * k + ".0"
    elif 0 < kk <= 21:
        text = digits[:kk] + "." + digits[kk:]
    elif -6 < kk <= 0:
        text = "0." + "0" * -kk + digits
    elif len(digits) == 1:
        text = f"{digits}e{kk - 1}"
    else:
        text = f"{digits[0]}.{digits[1:]}e{kk - 1}"
    return sign + text


def _nbytes(text: str) -> int:
    return len(text) if text.isascii() else len(text.encode("utf-8", "surrogatepass"))


class _DebugWriter:
    """rapidjson's PrettyWriter (single-line arrays) behind TF Serving's `JsonWriterWithLimit`: every write
    starts only while fewer than 256 bytes are out, so the text may stop anywhere."""

    def __init__(self) -> None:
        self.parts: list[str] = []
        self.size = 0
        self.levels: list[list[int]] = []  # [is_array, values written]

    def _put(self, text: str) -> None:
        self.parts.append(text)
        self.size += _nbytes(text)

    def _prefix(self) -> None:
        if not self.levels:
            return
        level = self.levels[-1]
        if level[0]:
            if level[1]:
                self._put(", ")
        else:
            self._put("\n" if not level[1] else ",\n" if level[1] % 2 == 0 else ": ")
            if level[1] % 2 == 0:
                self._put(" " * 4 * len(self.levels))
        level[1] += 1

    def value(self, value: Json) -> bool:
        if self.size >= _DEBUG_LIMIT:
            return False
        self._prefix()
        if isinstance(value, dict | list):
            is_array = isinstance(value, list)
            self._put("[" if is_array else "{")
            self.levels.append([is_array, 0])
            for item in value if isinstance(value, list) else chain.from_iterable(value.items()):
                if self.size >= _DEBUG_LIMIT:
                    return False
                if not is_array and self.levels[-1][1] % 2 == 0:
                    self._prefix()
                    self._put(quote(item))  # type: ignore[arg-type]  # a key
                elif not self.value(item):
                    return False
            if self.size >= _DEBUG_LIMIT:
                return False
            count = self.levels.pop()[1]
            if not is_array and count:
                self._put("\n" + " " * 4 * len(self.levels))
            self._put("]" if is_array else "}")
        elif value is None or isinstance(value, bool):
            self._put("null" if value is None else "true" if value else "false")
        elif isinstance(value, int):
            self._put(str(value))
        elif isinstance(value, float):
            if not math.isfinite(value):
                return False  # rapidjson's writer refuses NaN and Infinity
            self._put(_rapidjson_double(value))
        else:
            self._put(quote(value))
        return True


def debug_string(value: Json) -> str:
    """TF Serving's `JsonValueToDebugString`: a pretty dump cut after about 256 bytes."""
    writer = _DebugWriter()
    writer.value(value)
    return "".join(writer.parts)


def format_error_status(doc: Json, text: str) -> ServingError:
    """TF Serving's `FormatError`: `JSON Value: <dump> <text>`."""
    return invalid_argument(f"JSON Value: {debug_string(doc)} {text}")
