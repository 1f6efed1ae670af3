"""Number parsing and formatting exactly as Redis does it, independent of the host's C library.

Rules of this file:
- `parse_int` is Redis's `string2ll`: an optional "-", no "+", no spaces, no leading zeros,
  and the value must fit in a signed 64-bit integer; anything else is None.
- Floats (INCRBYFLOAT) follow Redis on x86-64, where `long double` is the x87 80-bit type:
  `strtold` parsing, addition rounded to a 64-bit significand (round half to even), and the
  `%.17Lf` format with trailing zeros (and a trailing ".") stripped, "-0" printed as "0".
  We emulate that type with exact `Fraction` arithmetic, so every replica (whatever its CPU)
  computes byte-identical results; Python's own `float` (a double) would not match Redis.
- A long double value is a `Fraction` (always exactly representable in 80 bits) or one of the
  float infinities.
- Standard library only; pure functions.
"""

from __future__ import annotations

import re
from fractions import Fraction

INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1

_INT_RE = re.compile(rb"-?[1-9][0-9]{0,19}|0")

LongDouble = Fraction | float
"""A finite x87 long double (an exact `Fraction`) or +/- infinity (a `float`)."""

_SIGNIFICAND_BITS = 64
_MIN_NORMAL_EXPONENT = -16382  # 2**-16382 is the smallest normal x87 long double
_OVERFLOW = 2**16384  # values that round to this or beyond are infinite
_MAX_FLOAT_CHARS = 5 * 1024  # Redis's MAX_LONG_DOUBLE_CHARS: longer strings are not floats

_DECIMAL_RE = re.compile(rb"([+-]?)(?:([0-9]+)\.?([0-9]*)|\.([0-9]+))(?:[eE]([+-]?[0-9]+))?")
_HEX_RE = re.compile(
    rb"([+-]?)0[xX](?:([0-9a-fA-F]+)\.?([0-9a-fA-F]*)|\.([0-9a-fA-F]+))(?:[pP]([+-]?[0-9]+))?"
)
_INF_RE = re.compile(rb"([+-]?)(?:inf|infinity)", re.IGNORECASE)


def parse_int(data: bytes) -> int | None:
    """The signed 64-bit integer `data` spells in Redis's strict syntax, else None."""
    if _INT_RE.fullmatch(data) is None:
        return None
    value = int(data)
    if value < INT64_MIN or value > INT64_MAX:
        return None
    return value


def format_int(value: int) -> bytes:
    """The decimal bytes of an integer (how Redis stores an INCR result)."""
    return b"%d" % value


def round_long_double(value: Fraction) -> LongDouble:
    """`value` rounded to the nearest x87 long double (round half to even), or an infinity."""
    if value == 0:
        return Fraction(0)
    negative = value < 0
    magnitude = -value if negative else value
    numerator, denominator = magnitude.numerator, magnitude.denominator
    exponent = numerator.bit_length() - denominator.bit_length()
    # Make 2**exponent <= magnitude < 2**(exponent + 1).
    if exponent >= 0:
        if numerator < denominator << exponent:
            exponent -= 1
    elif numerator << -exponent < denominator:
        exponent -= 1
    exponent = max(exponent, _MIN_NORMAL_EXPONENT)  # subnormals keep the minimum exponent
    shift = exponent - (_SIGNIFICAND_BITS - 1)  # the weight of the last significand bit
    if shift >= 0:
        quotient, remainder = divmod(numerator, denominator << shift)
        half_compare = (remainder << 1) - (denominator << shift)
    else:
        quotient, remainder = divmod(numerator << -shift, denominator)
        half_compare = (remainder << 1) - denominator
    if half_compare > 0 or (half_compare == 0 and quotient & 1):
        quotient += 1
    result = Fraction(quotient << shift) if shift >= 0 else Fraction(quotient, 1 << -shift)
    if result >= _OVERFLOW:
        return float("-inf") if negative else float("inf")
    return -result if negative else result


def parse_long_double(data: bytes) -> LongDouble | None:
    """What Redis's `string2ld` makes of `data` (strtold, whole string), or None if invalid.

    NaN, leading spaces, trailing garbage, overflow to infinity and underflow to zero are
    invalid; the literal "inf" / "infinity" is valid (INCRBYFLOAT then refuses the result).
    """
    if not data or len(data) >= _MAX_FLOAT_CHARS:
        return None
    match = _DECIMAL_RE.fullmatch(data)
    if match is not None:
        sign, whole, fraction_digits, only_fraction, exponent_text = match.groups()
        digits = (whole + fraction_digits) if only_fraction is None else only_fraction
        scale = len(fraction_digits) if only_fraction is None else len(only_fraction)
        significant = len(digits.lstrip(b"0"))
        return _exact_to_long_double(
            sign == b"-", int(digits), 10, int(exponent_text or b"0") - scale, significant
        )
    match = _HEX_RE.fullmatch(data)
    if match is not None:
        sign, whole, fraction_digits, only_fraction, exponent_text = match.groups()
        digits = (whole + fraction_digits) if only_fraction is None else only_fraction
        scale = len(fraction_digits) if only_fraction is None else len(only_fraction)
        mantissa = int(digits, 16)
        exponent = int(exponent_text or b"0") - 4 * scale
        return _exact_to_long_double(sign == b"-", mantissa, 2, exponent, mantissa.bit_length())
    match = _INF_RE.fullmatch(data)
    if match is not None:
        return float("-inf") if match.group(1) == b"-" else float("inf")
    return None


def _exact_to_long_double(
    negative: bool, mantissa: int, base: int, exponent: int, digit_count: int
) -> LongDouble | None:
    """mantissa * base**exponent as strtold rounds it; None on overflow or underflow to 0.

    `digit_count` is the number of significant digits of `mantissa` in `base`.
    """
    if mantissa == 0:
        return Fraction(0)
    # Rough magnitude in bits, to refuse absurd exponents before computing huge powers.
    bits_per_digit = 3.33 if base == 10 else 1.0
    magnitude_bits = (exponent + digit_count) * bits_per_digit
    if magnitude_bits > 16500:
        return None  # ERANGE overflow
    if magnitude_bits < -16600:
        return None  # ERANGE underflow to zero
    value = Fraction(mantissa) * Fraction(base) ** exponent
    rounded = round_long_double(-value if negative else value)
    if isinstance(rounded, float) or rounded == 0:
        return None
    return rounded


def add_long_double(left: LongDouble, right: LongDouble) -> Fraction | None:
    """left + right in long double arithmetic; None when the result is NaN or infinite."""
    if isinstance(left, float) or isinstance(right, float):
        return None  # inf + x is inf, inf - inf is NaN: both refused by INCRBYFLOAT
    result = round_long_double(left + right)
    if isinstance(result, float):
        return None
    return result


def format_long_double(value: Fraction) -> bytes:
    """Redis's LD_STR_HUMAN: `%.17Lf`, trailing zeros and "." stripped, "-0" shown as "0"."""
    negative = value < 0
    magnitude = -value if negative else value
    scaled = magnitude * 10**17
    quotient, remainder = divmod(scaled.numerator, scaled.denominator)
    twice = remainder * 2
    if twice > scaled.denominator or (twice == scaled.denominator and quotient & 1):
        quotient += 1
    whole, fraction_part = divmod(quotient, 10**17)
    text = b"%d" % whole
    if fraction_part:
        text += b"." + (b"%017d" % fraction_part).rstrip(b"0")
    if negative and quotient:
        text = b"-" + text
    return text
