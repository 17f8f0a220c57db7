"""TF Serving's text for float32 elements (`WriteDecimal`: `%g` if it round-trips as a float, else `%.9g`;
`.0` after whole numbers; `NaN`, `Infinity`), two uint64 words an element, for `json_fast`'s byte matrices.

The same numbers as `json_fast`'s general float writer in about half the numpy passes, each over the whole
chunk (no index subsets, no `np.where`): the value is scaled to 9 digits in float64 with an error bound, `%g`'s 6
digits are rounded from the same scaled value and tested against the midpoints to the float's neighbours (its
spacing read from the exponent bits), the digits are written four at a time from a table of ASCII quadruples,
and everything the layout needs (where the point goes, the fewest digits shown, the zeros of `0.000ddd`, the
exponent text) comes from tables indexed by (exponent, `%g` or not). Within an element's 16 bytes the text may
have NUL holes (the caller drops NULs): a sign byte when the chunk has negative numbers, the digits with their
point, an exponent (`e-05`) at a fixed place after them. An element whose rounding lies within the error bound
of a tie is written by the exact per-element writer; zeros, infinities and NaN come from a table.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeAlias

import numpy as np
import numpy.typing as npt

__all__ = ["float32_words"]

Array: TypeAlias = npt.NDArray[Any]
Decimal: TypeAlias = Callable[[float, bool], str]

_U64 = np.uint64
_LOW = -60  # 10**(8 - e) for decimal exponents e in [-60, 60]: float32's are in [-45, 38]
_SCALE = np.array([np.float64(f"1e{8 - e}") for e in range(_LOW, 61)])
# the 4 ASCII digits of 0..9999 as a little-endian word, and how many of them are trailing zeros (4 for 0)
_QUADS = np.array([int.from_bytes(f"{n:04d}".encode(), "little") for n in range(10_000)], dtype=_U64)
_TRAILING = np.array(
    [4 if n == 0 else len(f"{n:04d}") - len(f"{n:04d}".rstrip("0")) for n in range(10_000)], dtype=np.int8
)


def _text_words(text: bytes) -> tuple[int, int]:
    padded = text.ljust(16, b"\0")
    return int.from_bytes(padded[:8], "little"), int.from_bytes(padded[8:], "little")


def _point_masks() -> tuple[Array, Array, Array, Array, Array, Array]:
    """For select = point * 16 + length (digits kept): word masks over the text after the sign byte, as
    (keep, moved, dot) for the low and the high word. Digits before the point stay, the point goes at
    `point` (when a digit follows it), the digits from `point` on move up a byte; `length` digits in all."""
    tables: list[list[int]] = [[] for _ in range(6)]
    for select in range(16 * 16):
        point, length = divmod(select, 16)
        keep = bytearray(16)
        moved = bytearray(16)
        dot = bytearray(16)
        for column in range(min(point, length)):
            keep[column] = 0xFF
        if point < length:
            dot[point] = ord(".")
            for column in range(point + 1, min(length + 1, 16)):
                moved[column] = 0xFF
        for i, mask in enumerate((keep, moved, dot)):
            low, high = _text_words(bytes(mask))
            tables[i].append(low)
            tables[i + 3].append(high)
    keep_lo, moved_lo, dot_lo, keep_hi, moved_hi, dot_hi = (np.array(t, dtype=_U64) for t in tables)
    return keep_lo, keep_hi, moved_lo, moved_hi, dot_lo, dot_hi


_MASKS = _point_masks()


# zeros, infinities and NaN by sign * 4 + kind (0: zero, 1: infinity, 2: NaN)
_SPECIALS = np.array(
    [_text_words(t) for t in (b"0.0", b"Infinity", b"NaN", b"", b"-0.0", b"-Infinity", b"NaN", b"")],
    dtype=_U64,
)
# half the spacing of floats by biased exponent (subnormals: that of the smallest normals)
_HALF_SPACING = np.array([2.0 ** (max(biased, 1) - 151) for biased in range(256)])


def _layouts() -> tuple[Array, Array, Array, Array, Array]:
    """By layout = (exponent - _LOW) * 2 + (1 if `%g` round-trips else 0), what `%g`'s layout (fixed for
    exponents in [-4, precision), else scientific) needs: the base of the mask select (point * 16, plus the
    zeros before the digits of a small number), the fewest digits shown (up to the point and one after it), the
    shift (bits) and the zeros that put a small number's digits after `0.000`, and a scientific one's exponent
    text (in the high word)."""
    bases, floors, shifts, zeros, exponents = [], [], [], [], []
    for exponent in range(_LOW, 61):
        for short in (False, True):
            precision = 6 if short else 9
            large = 0 <= exponent < precision
            small = -4 <= exponent < 0
            bases.append((exponent + 1) * 16 if large else 16 - exponent if small else 16)
            floors.append(exponent + 2 if large else 0)
            shifts.append(-8 * exponent if small else 0)
            zeros.append(int.from_bytes(b"0" * -exponent, "little") if small else 0)
            text = f"e{exponent:+03d}".encode() if not (large or small) and abs(exponent) < 100 else b""
            exponents.append(int.from_bytes(text, "little") << 24)  # bytes 11-14 of the text
    return (
        np.array(bases, dtype=np.intp),
        np.array(floors, dtype=np.intp),
        np.array(shifts, dtype=_U64),
        np.array(zeros, dtype=_U64),
        np.array(exponents, dtype=_U64),
    )


_BASES, _FLOORS, _SHIFTS, _ZEROS, _EXPONENTS = _layouts()


def _digits(magnitude: Array) -> tuple[Array, Array, Array, Array]:
    """For positive finite values (float64): the value scaled by 10**(8 - exponent) into [1e8, 1e9) (within
    2.3e-7 of the exact product), that power of ten, the decimal exponent, and where rounding the scaled value
    to an integer (its 9 digits) would be too close to a tie to trust."""
    exponent = np.floor(np.log10(magnitude)).astype(np.intp)
    scale = _SCALE.take(exponent - _LOW)
    scaled = magnitude * scale
    for _ in range(3):  # log10 may be off by one next to powers of ten
        too_small, too_big = scaled < 1e8, scaled >= 1e9
        off = np.flatnonzero(too_small | too_big)
        if not off.size:
            break
        exponent[off] += too_big[off].astype(np.intp) - too_small[off]
        scale[off] = _SCALE.take(exponent[off] - _LOW)
        scaled[off] = magnitude[off] * scale[off]
    return scaled, scale, exponent, np.abs(scaled - np.rint(scaled)) >= 0.5 - 5e-7


def float32_words(values: Array, decimal: Decimal, words: Array) -> None:
    """Into `words` ((len(values), 2) uint64): each float32 element's text with NUL holes, as `write_decimal`
    writes it."""
    bits = values.view(np.uint32)
    magnitude_bits = bits & np.uint32(0x7FFFFFFF)
    biased = magnitude_bits >> np.uint32(23)
    special = magnitude_bits - np.uint32(1) >= np.uint32(0x7F7FFFFF)  # zero (wraps), infinity, NaN
    any_special = bool(special.any())
    if any_special:  # 1.0 in their place until the end (NaN must not meet the float arithmetic)
        magnitude_bits += special * (np.uint32(0x3F800000) - magnitude_bits)
    magnitude = magnitude_bits.view(np.float32).astype(np.float64)
    scaled, scale, exponent, unsure = _digits(magnitude)
    # `%g`'s 6 digits, in the units of `scaled` (1e9 if they carried); `scaled` / 1000 is within 4e-10
    thousandths = scaled * 1e-3
    short = np.rint(thousandths)
    unsure |= np.abs(thousandths - short) >= 0.5 - 1e-9
    short *= 1000
    # `%g` round-trips iff it lies strictly between the midpoints to the neighbours: half the float's
    # spacing (half that below a power of two), in the units of `scaled`.
    half = _HALF_SPACING.take(biased) * scale
    error = short - scaled
    powers = np.flatnonzero((bits << np.uint32(9)) == 0)  # no mantissa bits
    if powers.size:
        lower = powers[(error[powers] < 0) & (biased[powers] > 1)]
        half[lower] *= 0.5
    margin = np.abs(error) - half
    inside = margin < -1e-6
    unsure |= np.abs(margin) <= 1e-6
    digits = np.rint(scaled)
    digits += inside * (short - digits)  # arithmetic: np.where is slow on an unpredictable condition
    carry = np.flatnonzero(digits >= 1e9)
    if carry.size:
        digits[carry] = 1e8
        exponent[carry] += 1
    # nine ASCII digits and a '0' (for `123456789.0`) in two words: d | dddd | dddd | 0
    whole = digits.astype(np.int64)
    upper = whole // 10_000
    lowest = whole - upper * 10_000
    first = upper // 10_000
    middle = upper - first * 10_000
    last_quad = _QUADS.take(lowest)
    low = (first.astype(_U64) + _U64(ord("0"))) | (_QUADS.take(middle) << _U64(8)) | (last_quad << _U64(40))
    high = (last_quad >> _U64(24)) | _U64(ord("0") << 8)
    significant = 9 - _TRAILING.take(lowest) - (lowest == 0) * _TRAILING.take(middle)
    # where the point goes and how many digits show, by layout
    layout = (exponent - _LOW) * 2 + inside
    select = _BASES.take(layout) + np.maximum(significant, _FLOORS.take(layout))
    shift = _SHIFTS.take(layout)
    if bool(shift.any()):  # 0.000ddd: the digits moved up by -exponent zeros, the point after the first
        high = (high << shift) | (low >> (_U64(64) - shift))  # numpy shifts by >= 64 bits give 0
        low = (low << shift) | _ZEROS.take(layout)
    keep_lo, keep_hi, moved_lo, moved_hi, dot_lo, dot_hi = _MASKS
    text_lo = (low & keep_lo.take(select)) | ((low << _U64(8)) & moved_lo.take(select)) | dot_lo.take(select)
    text_hi = ((high << _U64(8)) | (low >> _U64(56))) & moved_hi.take(select)
    if bool((select >= 8 * 16).any()):  # the point in the high word: 9 digits before it
        text_hi |= (high & keep_hi.take(select)) | dot_hi.take(select)
    text_hi |= _EXPONENTS.take(layout)
    if bool(np.signbit(values).any()):  # a sign byte before the text
        np.bitwise_or(
            text_lo << _U64(8), (bits >> np.uint32(31)).astype(_U64) * _U64(ord("-")), out=words[:, 0]
        )
        np.bitwise_or(text_hi << _U64(8), text_lo >> _U64(56), out=words[:, 1])
    else:
        words[:, 0] = text_lo
        words[:, 1] = text_hi
    redo = np.flatnonzero(unsure & ~special) if any_special else np.flatnonzero(unsure)
    if redo.size:
        floats: list[float] = values[redo].tolist()
        words[redo] = [_text_words(decimal(v, False).encode()) for v in floats]
    if any_special:
        index = np.flatnonzero(special)
        kind = (biased[index] == 255) * (1 + ((bits[index] & np.uint32(0x7FFFFF)) != 0))
        words[index] = _SPECIALS[(bits[index] >> np.uint32(31)) * 4 + kind]
