"""Numeric JSON tensors at numpy speed: the text TF Serving's writer gives for every element of a float, double,
integer or bool tensor, and its layouts (`predictions` rows on one line, PrettyWriter's one element a line),
built as byte matrices without a Python step per element.

Every element becomes a few fixed-width byte columns (separator, sign, digits with the point, exponent, ...),
NUL where a byte is not used; the nonzero bytes of the element rows side by side, in row-major order, are the
JSON text.
Numbers follow `json_tensor.write_decimal` (TF Serving's `WriteDecimal`): `%g` if it round-trips at the value's
precision, else `%.9g` (float) or `%.17g` (double). The decimal digits are computed in binary floating point
(float64 for float32 values, x87 extended precision for doubles) with a bound on the error; an element whose
rounding or round-trip test lies within that bound of a tie (rare: about one in 10^5 floats) is formatted by
`write_decimal` itself, as is every double where numpy has no extended precision. Float32 elements take
`json_float32`'s leaner version of the same (two words an element instead of byte columns). `tests/unit/test_json_fast.py`
checks the output against the per-element writer on random tensors and bit patterns.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable, Sequence
from typing import Any, TypeAlias

import numpy as np
import numpy.typing as npt

from svc.wire.json_float32 import float32_words

__all__ = ["EXTENDED_DOUBLES", "columnar_text", "row_parts", "row_text", "tokens_supported"]

Array: TypeAlias = npt.NDArray[Any]
Decimal: TypeAlias = Callable[[float, bool], str]

# Doubles need 64 significand bits to hold the midpoints between neighbours and 17 digits with margin.
EXTENDED_DOUBLES = np.finfo(np.longdouble).nmant >= 63
# elements per pass: the temporaries stay in a core's L2 cache (1 << 16 was 1.4-2x slower on one image)
_CHUNK = 1 << 14
_U8 = np.uint8


def tokens_supported(array: Array) -> bool:
    """Whether this module writes an array of this (already converted) type."""
    kind = array.dtype.kind
    if kind == "f":  # the point is placed in little-endian uint64 words
        little = sys.byteorder == "little"
        return little and (array.dtype == np.float32 or (array.dtype == np.float64 and EXTENDED_DOUBLES))
    return kind in "iub"


def _power_table(dtype: type[np.floating[Any]], low: int, high: int) -> Array:
    """10**k for k in [low, high], each correctly rounded to `dtype` (parsed from its decimal text)."""
    return np.array([dtype(f"1e{k}") for k in range(low, high + 1)], dtype=dtype)


# 10**k for every k the digits of a float32 (in float64) or a double (in extended precision) need
_POWERS: dict[np.dtype[Any], tuple[Array, int]] = {
    np.dtype(np.float64): (_power_table(np.float64, -60, 70), -60)
}
if EXTENDED_DOUBLES:
    _POWERS[np.dtype(np.longdouble)] = (_power_table(np.longdouble, -330, 360), -330)


_EPS: dict[np.dtype[Any], float] = {dtype: float(np.finfo(dtype).eps) for dtype in _POWERS}


def _scale(value: Array, exponent: Array) -> Array:
    """value * 10**exponent in value's type, within twice the type's epsilon (two roundings)."""
    table, low = _POWERS[value.dtype]
    scaled: Array = value * table[exponent - low]
    return scaled


def _round_digits(value: Array, precision: int) -> tuple[Array, Array, Array]:
    """For positive finite values: the `precision` significant digits rounded to nearest (an integer in
    [10**(p-1), 10**p)), the decimal exponent of the first digit, and where the rounding is too close to a tie
    to be trusted."""
    exponent = np.floor(np.log10(value.astype(np.float64, copy=False))).astype(np.intp)
    low, high = 10.0 ** (precision - 1), 10.0**precision
    for _ in range(3):  # log10 may be off by one next to powers of ten
        scaled = _scale(value, precision - 1 - exponent)
        too_small, too_big = scaled < low, scaled >= high
        if not (too_small.any() or too_big.any()):
            break
        exponent = exponent - too_small + too_big
    digits = np.rint(scaled)
    # scaled is within 2 epsilon of the exact product: a fraction that close to .5 could round either way
    unsure = np.abs(np.abs(scaled - digits) - 0.5) <= high * (2 * _EPS[value.dtype])
    unsure |= too_small | too_big
    carry = digits >= high
    digits[carry] = low
    return digits.astype(np.int64), exponent + carry, unsure


def _decimal_parts(values: Array) -> tuple[Array, Array, Array, Array]:
    """`write_decimal` for nonzero finite values as (digits scaled to 17 or 9 places, exponent, precision used
    (6 for `%g`), unsure)."""
    is_double = values.dtype == np.float64
    wide = values.astype(np.longdouble if is_double else np.float64)
    precision = 17 if is_double else 9
    magnitude = np.abs(wide)
    full, full_exp, unsure = _round_digits(magnitude, precision)
    # The 6 digits of `%g` from those: exact unless the dropped digits are exactly a half (a double rounding).
    drop = 10 ** (precision - 6)
    short, rest = np.divmod(full, drop)
    unsure |= rest == drop // 2
    short += rest > drop // 2
    carry = short >= 10**6
    short[carry] = 10**5
    short_exp = full_exp + carry
    # `%g` round-trips iff its 6 digits lie strictly between the midpoints to the value's neighbours.
    absolute = np.abs(values)
    below = np.nextafter(absolute, absolute.dtype.type(0)).astype(wide.dtype)
    with np.errstate(over="ignore", invalid="ignore"):
        above = np.nextafter(absolute, absolute.dtype.type(np.inf)).astype(wide.dtype)
        above = np.where(np.isinf(above), magnitude + (magnitude - below), above)
    low, high = (magnitude + below) / 2, (magnitude + above) / 2
    back = _scale(short.astype(wide.dtype), short_exp - 5)
    margin = back * (2 * _EPS[wide.dtype])
    inside = (back > low + margin) & (back < high - margin)
    unsure |= ~inside & ((back >= low - margin) & (back <= high + margin))
    digits = np.where(inside, short * drop, full)
    return digits, np.where(inside, short_exp, full_exp), np.where(inside, 6, precision), unsure


def _table(texts: Sequence[bytes]) -> Array:
    """Texts as the rows of a byte matrix, NUL-padded (NUL bytes are dropped from the output)."""
    width = max(1, *map(len, texts))
    return np.frombuffer(b"".join(t.ljust(width, b"\0") for t in texts), dtype=_U8).reshape(len(texts), width)


def _dot_masks(precision: int) -> tuple[Array, Array, Array]:
    """For each (point, length) as point * (precision + 2) + length, uint64 words over the bytes of the
    digits-and-point text: which digits stay, which move up a byte (after the point), and the point itself;
    only the first `length` bytes count."""
    words = (precision + 8) // 8
    keep, moved, dot = [], [], []
    for point in range(precision + 2):
        for length in range(precision + 2):
            columns = np.arange(8 * words)
            used = columns < length
            keep.append(np.where((columns < point) & used, 0xFF, 0).astype(_U8))
            moved.append(np.where((columns > point) & used, 0xFF, 0).astype(_U8))
            dot.append(np.where((columns == point) & used, ord("."), 0).astype(_U8))
    # one row per word, so that each word is a 1-d gather
    return tuple(np.stack(masks).view(np.uint64).T.copy() for masks in (keep, moved, dot))  # type: ignore[return-value]


_DOT_MASKS = {precision: _dot_masks(precision) for precision in (9, 17)}


def _digit_columns(number: Array, width: int, out: Array | None = None) -> Array:
    """The `width` decimal digits (ASCII) of non-negative integers, most significant first (into the first
    `width` columns of `out` if given)."""
    if out is None:
        out = np.empty((number.shape[0], width), dtype=_U8)
    rows = np.empty((width, number.shape[0]), dtype=_U8)  # digit by digit, contiguous
    rest = number.astype(np.int32) if width <= 9 else number.copy()
    for column in range(width - 1, -1, -1):
        quotient = rest // 10
        rows[column] = rest - quotient * 10
        rest = quotient
    rows += ord("0")
    out[:, :width] = rows.T
    return out


_LEADS = _table([b"", b"0.0", b"NaN", b"Infinity", b"", b"", b"0.", b"0.0", b"0.00", b"0.000"])
_BOOLS = _table([b"false", b"true"])


def _float_segments(values: Array, decimal: Decimal) -> list[Array]:
    count = values.shape[0]
    is_double = values.dtype == np.float64
    precision = 17 if is_double else 9
    nan, inf, zero = np.isnan(values), np.isinf(values), values == 0
    special = nan | inf | zero
    any_special = bool(special.any())
    if any_special:
        regular = ~special
        digits = np.full(count, 10 ** (precision - 1), dtype=np.int64)
        exponent = np.zeros(count, dtype=np.intp)
        used = np.full(count, precision, dtype=np.intp)
        unsure = np.zeros(count, dtype=bool)
        if regular.any():
            parts = _decimal_parts(values[regular])
            digits[regular], exponent[regular], used[regular], unsure[regular] = parts
    else:
        digits, exponent, used, unsure = _decimal_parts(values)
    any_unsure = bool(unsure.any())
    if any_special or any_unsure:
        regular = ~(special | unsure)
    words = (precision + 8) // 8  # the digits and a '.', in uint64 words
    matrix = np.zeros((count, 8 * words), dtype=_U8)
    _digit_columns(digits, precision, matrix)
    # Trailing zeros are dropped (`%g`): `significant` digits remain.
    significant = np.full(count, precision, dtype=np.intp)
    trailing = np.ones(count, dtype=bool)
    for column in range(precision - 1, 0, -1):
        trailing &= matrix[:, column] == ord("0")
        significant -= trailing
    fixed = (exponent >= -4) & (exponent < used)
    small = fixed & (exponent < 0)
    whole = fixed & (exponent >= 0)
    scientific = ~fixed
    if any_special or any_unsure:
        small &= regular
        whole &= regular
        scientific &= regular
    # the digits with a '.' after the first `point` of them, cut after `length` bytes
    point = np.where(whole, exponent + 1, np.where(scientific, 1, precision + 1))
    length = np.where(
        whole,
        np.maximum(significant, exponent + 1) + 1,
        np.where(small, significant, np.where(significant > 1, significant + 1, 1)),
    )
    if any_special or any_unsure:
        length = length * regular
    # whole uint64 words at a time: digits before the point, the point, digits after it moved up a byte
    keep, moved, dot = _DOT_MASKS[precision]
    select = point * (precision + 2) + length
    plain = matrix.view(np.uint64)
    shifted = plain << np.uint64(8)
    shifted[:, 1:] |= plain[:, :-1] >> np.uint64(56)
    for word in range(words):
        plain[:, word] &= keep[word].take(select)
        plain[:, word] |= shifted[:, word] & moved[word].take(select)
        plain[:, word] |= dot[word].take(select)
    dotted = matrix[:, : precision + 1]
    segments = []
    if any_special or bool(np.signbit(values).any()):
        sign = np.signbit(values) & ~nan
        if any_unsure:
            sign &= ~unsure
        segments.append((sign * np.uint8(ord("-")))[:, None])
    if any_special or bool(small.any()):
        # zeros, NaN and infinities, or "0." and zeros before small numbers
        segments.append(_LEADS[np.select([zero, nan, inf, small], [1, 2, 3, 5 - exponent], 0)])
    if any_unsure:  # as `write_decimal` writes them
        unsure_index = np.flatnonzero(unsure)
        rows = _table([decimal(v, is_double).encode() for v in values[unsure_index].tolist()])
        fallback = np.zeros((count, rows.shape[1]), dtype=_U8)
        fallback[unsure_index] = rows
        segments.append(fallback)
    segments.append(dotted)
    # "0" after whole numbers without a fraction (`.0`), or the exponent: e+05, e-123
    zero_after = whole & (significant <= exponent + 1)
    if bool(scientific.any()):
        tail = np.zeros((count, 5), dtype=_U8)
        tail[:, 0] = np.where(scientific, ord("e"), zero_after * np.uint8(ord("0")))
        tail[:, 1] = np.where(scientific, np.where(exponent < 0, ord("-"), ord("+")), 0)
        magnitude = np.abs(exponent)
        exponent_digits = _digit_columns(magnitude, 3)
        tail[:, 2] = np.where(scientific & (magnitude >= 100), exponent_digits[:, 0], 0)
        tail[:, 3:] = exponent_digits[:, 1:] * scientific[:, None]
        segments.append(tail)
    elif bool(zero_after.any()):
        segments.append((zero_after * np.uint8(ord("0")))[:, None])
    return segments


def _int_segments(values: Array) -> list[Array]:
    count = values.shape[0]
    if values.dtype.kind == "u":
        magnitude = values.astype(np.uint64)
        negative = np.zeros(count, dtype=bool)
    else:
        wide = values.astype(np.int64)
        negative = wide < 0
        # |int64 min| does not fit int64: -(v + 1) + 1 in uint64
        magnitude = np.where(negative, (-(wide + 1)).astype(np.uint64) + np.uint64(1), wide.astype(np.uint64))
    width = int(np.max(magnitude)).bit_length() * 3 // 10 + 1 if count else 1  # enough digits for the largest
    width = min(max(width, 1), 20)
    matrix = _digit_columns(magnitude, width)
    leading = np.ones(count, dtype=bool)
    for column in range(width - 1):  # leading zeros become NUL
        leading &= matrix[:, column] == ord("0")
        matrix[:, column] = np.where(leading, 0, matrix[:, column])
    return [np.where(negative, ord("-"), 0).astype(_U8)[:, None], matrix]


def _element_segments(flat: Array, decimal: Decimal) -> list[Array]:
    kind = flat.dtype.kind
    if kind == "f":
        return _float_segments(flat, decimal)
    if kind == "b":
        return [_BOOLS[flat.astype(np.intp)]]
    return _int_segments(flat)


def _rollovers(shape: tuple[int, ...], levels: int) -> Array:
    """For each element in flat order: how many of the innermost `levels` axes start over there; the first
    element gets `len(shape) + 1` (no separator)."""
    count = np.zeros(shape, dtype=np.uint8)
    for level in range(1, levels + 1):
        count[(..., *[0] * level)] += 1  # type: ignore[arg-type]
    flat = count.reshape(-1)
    flat[0] = len(shape) + 1
    return flat


def _join(
    flat: Array,
    shape: tuple[int, ...],
    separators: Sequence[bytes],
    levels: int,
    decimal: Decimal,
    head: bytes = b"",
    tail: bytes = b"",
) -> bytes:
    """The elements' texts, each preceded by `separators[r]` (r: axes starting over there; index 0 gets none),
    between `head` and `tail` (one copy of the whole text)."""
    table = _table([*separators, *[b""] * (len(shape) + 2 - len(separators))])
    width = -(-table.shape[1] // 8) * 8  # in whole uint64 words: a 1-d gather per word
    words = np.zeros((table.shape[0], width), dtype=_U8)
    words[:, : table.shape[1]] = table
    word_table = words.view(np.uint64).T.copy()
    rollovers = _rollovers(shape, levels)
    out = [head]
    for start in range(0, flat.shape[0], _CHUNK):
        chunk = flat[start : start + _CHUNK]
        roll = rollovers[start : start + chunk.shape[0]]
        separated = word_table.shape[0]
        own = 2 if chunk.dtype == np.float32 else 0  # a float32's text: two more words in the row
        words = np.empty((chunk.shape[0], separated + own), dtype=np.uint64)
        for word, column in enumerate(word_table):
            words[:, word] = column.take(roll)
        if own:
            float32_words(chunk, decimal, words[:, separated:])
            matrix = words
        else:
            matrix = np.concatenate([words.view(_U8), *_element_segments(chunk, decimal)], axis=1)
        out.append(matrix.tobytes().translate(None, b"\0"))
    out.append(tail)
    return b"".join(out)


def row_text(array: Array, decimal: Decimal, head: bytes = b"", tail: bytes = b"") -> bytes:
    """The rows of a tensor of rank >= 1 joined by `, `, each written on one line (`[[1, 2], [3, 4]]`),
    without the outer brackets: TF Serving's `predictions` list for a single output (between `head` and
    `tail`)."""
    shape = array.shape
    inner = len(shape) - 1
    separators = [b"]" * r + b", " + b"[" * r for r in range(inner + 1)]
    return _join(array.reshape(-1), shape, separators, inner, decimal, head + b"[" * inner, b"]" * inner + tail)


def row_parts(array: Array, decimal: Decimal) -> list[bytes]:
    """Each row of a tensor of rank >= 1 on one line: the values of one output in `predictions` objects."""
    shape = array.shape
    inner = len(shape) - 1
    # \x01 never occurs in a number's text: it marks where a row ends
    separators = [b"]" * r + b", " + b"[" * r for r in range(inner)] + [b"]" * inner + b"\x01" + b"[" * inner]
    body = _join(array.reshape(-1), shape, separators, inner, decimal)
    return (b"[" * inner + body + b"]" * inner).split(b"\x01")


def columnar_text(array: Array, depth: int, decimal: Decimal, head: bytes = b"", tail: bytes = b"") -> bytes:
    """A whole tensor in PrettyWriter's layout (one element a line), its `[` at nesting `depth` (between
    `head` and `tail`)."""
    shape = array.shape
    rank = len(shape)
    if rank == 0:
        return _join(array.reshape(-1), shape, [b""], 0, decimal, head, tail)
    if math.prod(shape) == 0:
        raise ValueError("columnar_text needs a non-empty tensor")

    def indent(level: int) -> bytes:
        return b" " * 4 * level

    def opening(axis: int) -> bytes:
        return b"[\n" + indent(depth + axis + 1)

    def closing(axis: int) -> bytes:
        return b"\n" + indent(depth + axis) + b"]"

    separators = []
    for r in range(rank):  # r innermost axes start over: close them, next item of the axis above, reopen
        closes = b"".join(closing(axis) for axis in range(rank - 1, rank - 1 - r, -1))
        opens = b"".join(opening(axis) for axis in range(rank - r, rank))
        separators.append(closes + b",\n" + indent(depth + rank - r) + opens)
    opens = b"".join(opening(axis) for axis in range(rank))
    closes = b"".join(closing(axis) for axis in range(rank - 1, -1, -1))
    return _join(array.reshape(-1), shape, separators, rank - 1, decimal, head + opens, closes + tail)
