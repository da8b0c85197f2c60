"""The `multiply` handler's logic, with the operand rules of the Rust `calc`
crate (plugins/calc/src/lib.rs) that `add` and `subtract` use.

The message is a JSON object with two operands, in the tutorial's form
``{"operation": "mul", "operator_1": "6", "operator_2": "7"}`` or the short
form ``{"x": 6, "y": 7}``. If ``operator_1`` or ``operator_2`` is present the
long form is used (and both must be there); otherwise ``x`` and ``y`` are. An
operand is a JSON number or a string holding a number (surrounding whitespace
is ignored).

When both operands are integers (JSON integers, or strings that parse as a
64-bit integer) the product is exact, and one outside the 64-bit range is an
error ("integer overflow"), as in the Rust handlers, although Python's ints
could hold it. Otherwise the product is a float, and one that is not finite is
an error. The output is the input object with ``"result"`` added.

JSON is read and written the way the Rust handlers (serde_json) do it, so a
message routed to ``multiply`` comes out shaped exactly like one routed to
``add``: compact, object keys sorted, floats written as serde_json writes them
(``7.0``, ``0.25``, ``1e+20``, ``1e-7``); integers between 2**63 and 2**64 - 1
are kept exactly but count as floats, larger ones are read as floats.

Every problem with the input raises :class:`InvalidInput`, whose message names
the field involved; the host dead-letters such a message and never retries it.
Nothing here imports the component bindings, so it is tested natively
(``python3 -m unittest`` in this folder).
"""

import json
import math
import re
from json.encoder import encode_basestring

I64_MIN = -(1 << 63)
I64_MAX = (1 << 63) - 1
U64_MAX = (1 << 64) - 1


class InvalidInput(Exception):
    """The message cannot be processed: dead-letter it (``invalid-input``)."""


class _JsonProblem(ValueError):
    pass


def handle_value(data: bytes) -> bytes:
    """One message value in (bytes), the output value out (bytes)."""
    if not data:
        raise InvalidInput("message value is empty; expected a JSON document")
    try:
        text = data.decode("utf-8")
        _check_depth(text)
        value = _DECODER.decode(text)
        if _SURROGATE_ESCAPE.search(text):
            # JSON escapes can spell a lone surrogate, which is not text.
            dumps(value).encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidInput(
            "message value is not valid JSON: lone surrogate in a string"
        ) from None
    except (UnicodeDecodeError, ValueError, RecursionError) as err:
        raise InvalidInput(f"message value is not valid JSON: {err}") from None
    return dumps(multiply(value)).encode("utf-8")


_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")

# serde_json refuses 128 nested arrays or objects; so does this handler, which
# also keeps the interpreter's stack well away from its end.
_MAX_DEPTH = 127
_BRACKET_OR_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|[\[\]{}]')


def _check_depth(text: str) -> None:
    if text.count("[") + text.count("{") <= _MAX_DEPTH:
        return
    depth = 0
    for token in _BRACKET_OR_STRING.finditer(text):
        char = token.group()
        if char in "[{":
            depth += 1
            if depth > _MAX_DEPTH:
                start = token.start()
                line = text.count("\n", 0, start) + 1
                column = start - (text.rfind("\n", 0, start) + 1) + 1
                raise _JsonProblem(f"recursion limit exceeded at line {line} column {column}")
        elif char in "]}":
            depth -= 1


def _parse_int(text: str):
    if text == "-0":
        return -0.0  # serde_json reads `-0` as the float -0.0
    n = int(text)
    if I64_MIN <= n <= U64_MAX:
        return n
    return _parse_float(text)


def _parse_float(text: str) -> float:
    x = float(text)
    if not math.isfinite(x):
        raise _JsonProblem("number out of range")
    return x


def _reject_constant(name: str):
    raise _JsonProblem(f"expected value, got {name}")


# One decoder and one encoder for every message: json.loads and json.dumps
# with options build a new one (and its C scanner) on each call.
_DECODER = json.JSONDecoder(
    parse_int=_parse_int,
    parse_float=_parse_float,
    parse_constant=_reject_constant,
)


def multiply(value):
    """The input object (a dict) with ``"result": first * second`` added."""
    if not isinstance(value, dict):
        raise InvalidInput(
            'expected a JSON object with "operator_1" and "operator_2" '
            f'(or "x" and "y"), got {_describe(value)}'
        )
    first, second = operands(value)
    value["result"] = product(first, second)
    return value


def operands(obj: dict):
    """Finds and parses the two operands of an object."""
    if "operator_1" in obj or "operator_2" in obj:
        names = ("operator_1", "operator_2")
    elif "x" in obj or "y" in obj:
        names = ("x", "y")
    else:
        raise InvalidInput(
            'missing operands: expected "operator_1" and "operator_2" (or "x" and "y")'
        )
    parsed = []
    for field in names:
        if field not in obj:
            raise InvalidInput(f'missing operand "{field}"')
        parsed.append(parse_operand(field, obj[field]))
    return parsed


def parse_operand(field: str, value):
    """An int (64-bit) or a finite float, from a JSON number or numeric string."""
    if isinstance(value, bool) or value is None or isinstance(value, (list, dict)):
        raise InvalidInput(
            f'operand "{field}" must be a number or a numeric string, got {_describe(value)}'
        )
    if isinstance(value, int):
        # Integers between 2**63 and 2**64 - 1 are exact JSON but not i64: floats.
        return value if value <= I64_MAX else float(value)
    if isinstance(value, float):
        return value
    number, problem = _parse_numeric_string(value)
    if problem is not None:
        raise InvalidInput(f'operand "{field}" {problem}: {encode_basestring(value)}')
    return number


# Rust's `str::trim`: Unicode White_Space at both ends.
_SPACE = "\t\n\x0b\x0c\r \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000"
_INTEGER = re.compile(r"[+-]?[0-9]+")
# Rust's float syntax without inf/nan: digits, one point, an exponent.
_DECIMAL = re.compile(r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")


def _parse_numeric_string(raw: str):
    s = raw.strip(_SPACE)
    if _INTEGER.fullmatch(s):
        n = int(s)
        if I64_MIN <= n <= I64_MAX:
            return n, None
    if not _DECIMAL.fullmatch(s):
        return None, "is not a number"
    x = float(s)
    return (x, None) if math.isfinite(x) else (None, "is out of range")


def product(first, second):
    """Exact for two ints (within 64 bits), else a finite float."""
    if type(first) is int and type(second) is int:
        result = first * second
        if not I64_MIN <= result <= I64_MAX:
            raise InvalidInput(f"integer overflow: {first} * {second}")
        return result
    result = float(first) * float(second)
    if not math.isfinite(result):
        raise InvalidInput(
            f"result is not a finite number: {_show(first)} * {_show(second)}"
        )
    return result


def _show(n) -> str:
    """An operand as the Rust handlers show it in reasons (floats as ``{:?}``)."""
    return str(n) if type(n) is int else debug_float(n)


def _describe(value) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return f"the number {value}"
    if isinstance(value, float):
        return f"the number {format_float(value)}"
    if isinstance(value, str):
        return f"the string {encode_basestring(value)}"
    return "an array" if isinstance(value, list) else "an object"


def dumps(value) -> str:
    """Compact JSON with sorted keys, as serde_json writes a ``Value``."""
    # The json module's encoder is C; it writes floats with repr(), which
    # serde_json agrees with except below 1e-4 ("1e-05" for "0.00001").
    text = _ENCODER.encode(value)
    return text if "e-" not in text else _dumps(value)


_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), sort_keys=True)


def _dumps(value) -> str:
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return format_float(value)
    if isinstance(value, str):
        return encode_basestring(value)
    if isinstance(value, list):
        return "[" + ",".join(_dumps(item) for item in value) + "]"
    items = sorted(value.items())
    return "{" + ",".join(encode_basestring(k) + ":" + _dumps(v) for k, v in items) + "}"


def _decompose(x: float):
    """Shortest digits of a finite non-zero float and exponent: |x| = digits * 10**exponent."""
    mantissa, _, exp = repr(abs(x)).partition("e")
    whole, _, frac = mantissa.partition(".")
    digits = (whole + frac).lstrip("0")
    exponent = (int(exp) if exp else 0) - len(frac)
    stripped = digits.rstrip("0")
    return stripped, exponent + len(digits) - len(stripped)


def format_float(x: float) -> str:
    """A float as serde_json 1.0.154 writes it: shortest digits, ``1e+16``, ``1e-6``."""
    if x == 0:
        return "-0.0" if math.copysign(1.0, x) < 0 else "0.0"
    sign = "-" if x < 0 else ""
    digits, k = _decompose(x)
    length = len(digits)
    kk = length + k  # 10**(kk-1) <= |x| < 10**kk
    if k >= 0 and kk <= 16:
        return f"{sign}{digits}{'0' * k}.0"
    if 0 < kk <= 16:
        return f"{sign}{digits[:kk]}.{digits[kk:]}"
    if -5 < kk <= 0:
        return f"{sign}0.{'0' * -kk}{digits}"
    rest = "" if length == 1 else "." + digits[1:]
    exponent = kk - 1
    return f"{sign}{digits[0]}{rest}e{'+' if exponent > 0 else ''}{exponent}"


def debug_float(x: float) -> str:
    """A float as Rust's ``{:?}`` shows it (used in error reasons, like ``calc``)."""
    if x == 0 or 1e-4 <= abs(x) < 1e16:
        return format_float(x)
    sign = "-" if x < 0 else ""
    digits, k = _decompose(x)
    rest = "" if len(digits) == 1 else "." + digits[1:]
    return f"{sign}{digits[0]}{rest}e{k + len(digits) - 1}"
