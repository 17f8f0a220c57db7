"""TF Serving's text for float32 elements (`WriteDecimal`: `%g` if it round-trips as a float, else `%.9g`;
`.0` after whole numbers; `NaN`, `Infinity`), two uint64 words an element, for `json_fast`'s byte matrices.

The same numbers as `json_fast`'s general float writer, in fewer numpy passes: the 9 digits are rounded in
float64 with an error bound, the 6 of `%g` derived from them and tested against the midpoints to the float's
neighbours (its spacing read from the exponent bits), the digits written four at a time from a table of ASCII
quadruples, and the point inserted with word masks picked by (point, length). Within each element's 16 bytes
the text may have NUL holes (the caller drops NULs): byte 0 is the sign, the digits and point start at byte 1,
an exponent (`e-05`) sits at bytes 12-15. An element whose rounding lies within the error bound of a tie is
written by the exact per-element writer, as are specials' texts from a table.
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


def _exponent_table() -> Array:
    """`e+05`, `e-45` for decimal exponents -64..63, placed at bytes 11-14 of the text (high word bytes 3-6)."""
    texts = [f"e{e:+03d}".encode() for e in range(-64, 64)]
    return np.array([int.from_bytes(t, "little") << 24 for t in texts], dtype=_U64)


_EXPONENTS = _exponent_table()
# zeros, infinities and NaN by sign * 4 + kind (0: zero, 1: infinity, 2: NaN)
_SPECIALS = np.array(
    [_text_words(t) for t in (b"0.0", b"Infinity", b"NaN", b"", b"-0.0", b"-Infinity", b"NaN", b"")],
    dtype=_U64,
)


def _digits(magnitude: Array) -> tuple[Array, Array, Array, Array]:
    """For positive finite values (float64): the value scaled by 10**(8 - exponent) into [1e8, 1e9) (within
    2.3e-7 of the exact product), its 9 significant digits rounded to nearest (a float holding an integer in
    [1e8, 1e9]: 1e9 when it carried), the decimal exponent and where that rounding is too close to a tie to
    trust."""
    exponent = np.floor(np.log10(magnitude)).astype(np.intp)
    scaled = magnitude * _SCALE.take(exponent - _LOW)
    for _ in range(3):  # log10 may be off by one next to powers of ten
        too_small, too_big = scaled < 1e8, scaled >= 1e9
        off = np.flatnonzero(too_small | too_big)
        if not off.size:
            break
        exponent[off] += too_big[off].astype(np.intp) - too_small[off]
        scaled[off] = magnitude[off] * _SCALE.take(exponent[off] - _LOW)
    digits = np.rint(scaled)
    unsure = np.abs(np.abs(scaled - digits) - 0.5) <= 5e-7
    return scaled, digits, exponent, unsure


def float32_words(values: Array, decimal: Decimal, words: Array) -> None:
    """Into `words` ((len(values), 2) uint64): each float32 element's text with NUL holes, as `write_decimal`
    writes it."""
    bits = values.view(np.uint32)
    magnitude_bits = bits & np.uint32(0x7FFFFFFF)
    biased = magnitude_bits >> np.uint32(23)
    special = (biased == 255) | (magnitude_bits == 0)
    any_special = bool(special.any())
    if any_special:  # 1.0 in their place until the end (NaN must not meet the float arithmetic)
        magnitude_bits = np.where(special, np.uint32(0x3F800000), magnitude_bits)
    magnitude = magnitude_bits.view(np.float32).astype(np.float64)
    scaled, digits, exponent, unsure = _digits(magnitude)
    # `%g`: 6 digits from the 9 (exact unless the 3 dropped are exactly 500: a double rounding)
    short = np.floor(digits / 1000)
    rest = digits - short * 1000
    unsure |= rest == 500
    short += rest > 500
    back = short * 1000  # `%g`'s value in the scaled units of `scaled` (1e9 if it carried)
    # It round-trips iff it lies strictly between the midpoints to the neighbours: half the float's spacing
    # (a quarter below a power of two), here in scaled units; `scaled` is within 2.3e-7 of the exact value.
    spacing = ((np.maximum(biased, 1).astype(_U64) + _U64(1023 - 150)) << _U64(52)).view(np.float64)
    half = spacing * (_SCALE.take(exponent - _LOW) * 0.5)
    error = back - scaled
    below = np.flatnonzero((error < 0) & ((bits & np.uint32(0x7FFFFF)) == 0) & (biased > 1))
    if below.size:
        half[below] *= 0.5
    distance = np.abs(error)
    inside = distance < half - 1e-6
    unsure |= np.abs(distance - half) <= 1e-6
    digits = np.where(inside, back, digits)
    carry = np.flatnonzero(digits >= 1e9)
    if carry.size:
        digits[carry] = 1e8
        exponent[carry] += 1
    precision = np.where(inside, 6, 9)
    # nine ASCII digits and a '0' (for `123456789.0`) in two words: d | dddd | dddd | 0
    whole = digits.astype(np.int64)
    upper = whole // 10_000
    lowest = whole - upper * 10_000
    first = upper // 10_000
    middle = upper - first * 10_000
    low = (
        (first.astype(_U64) + _U64(ord("0")))
        | (_QUADS.take(middle) << _U64(8))
        | (_QUADS.take(lowest) << _U64(40))
    )
    high = (_QUADS.take(lowest) >> _U64(24)) | _U64(ord("0") << 8)
    trailing = _TRAILING.take(lowest) + (lowest == 0) * _TRAILING.take(middle)
    significant = 9 - trailing.astype(np.intp)
    # %g's layout: fixed for exponents in [-4, precision), else scientific; trailing zeros dropped
    fixed = (exponent >= -4) & (exponent < precision)
    large = fixed & (exponent >= 0)
    point = np.where(large, exponent + 1, 1)
    length = np.where(large, np.maximum(significant, exponent + 2), significant)
    small = np.flatnonzero(fixed & (exponent < 0))
    if small.size:  # 0.000ddd: shifted up by -exponent zeros, the point after the first
        shift = (-exponent[small]).astype(_U64) * _U64(8)
        zeros = (_U64(1) << shift) - _U64(1)
        zeros &= _U64(0x3030303030303030)
        low_small = low[small]
        high[small] = (high[small] << shift) | (low_small >> (_U64(64) - shift))
        low[small] = (low_small << shift) | zeros
        length[small] -= exponent[small]
    select = point * 16 + length
    keep_lo, keep_hi, moved_lo, moved_hi, dot_lo, dot_hi = _MASKS
    text_lo = (low & keep_lo.take(select)) | ((low << _U64(8)) & moved_lo.take(select)) | dot_lo.take(select)
    text_hi = (
        (high & keep_hi.take(select))
        | (((high << _U64(8)) | (low >> _U64(56))) & moved_hi.take(select))
        | dot_hi.take(select)
    )
    scientific = np.flatnonzero(~fixed)
    if scientific.size:
        text_hi[scientific] |= _EXPONENTS.take(exponent[scientific] + 64)
    # the sign byte first
    words[:, 0] = (text_lo << _U64(8)) | ((bits >> np.uint32(31)).astype(_U64) * _U64(ord("-")))
    words[:, 1] = (text_hi << _U64(8)) | (text_lo >> _U64(56))
    redo = np.flatnonzero(unsure & ~special) if any_special else np.flatnonzero(unsure)
    if redo.size:
        floats: list[float] = values[redo].tolist()
        words[redo] = [_text_words(decimal(v, False).encode()) for v in floats]
    if any_special:
        index = np.flatnonzero(special)
        kind = (biased[index] == 255) * (1 + ((bits[index] & np.uint32(0x7FFFFF)) != 0))
        words[index] = _SPECIALS[(bits[index] >> np.uint32(31)) * 4 + kind]
