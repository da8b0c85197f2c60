// The `divide` handler's logic, with the operand rules of the Rust `calc`
// crate (plugins/calc/src/lib.rs) that `add` and `subtract` use.
//
// The message is a JSON object with two operands, in the tutorial's form
// {"operation": "div", "operator_1": "6", "operator_2": "3"} or the short
// form {"x": 6, "y": 3}. If `operator_1` or `operator_2` is present the long
// form is used (and both must be there); otherwise `x` and `y` are. An
// operand is a JSON number or a string holding a number (surrounding
// whitespace is ignored).
//
// If both operands are integers (JSON integers, or strings that parse as a
// 64-bit integer) and the first is a multiple of the second, the result is
// the exact integer quotient. Otherwise it is the floating-point quotient,
// and a result that is not finite is an error. Dividing by zero (0 or 0.0)
// is an error. The output is the input object with "result" added.
//
// Every problem with the input throws `InvalidInput`, whose message names the
// field involved; the host dead-letters such a message and never retries it.

import { F64, JsonError, debugFloat, formatFloat, parseBytes, toBytes } from './json.js';

/** The message cannot be processed: dead-letter it (`invalid-input`). */
export class InvalidInput extends Error {}

const I64_MIN = -(2n ** 63n);
const I64_MAX = 2n ** 63n - 1n;

/** Whether an operand or result is an exact 64-bit integer (a BigInt). */
function isInt(n) {
  return typeof n === 'bigint';
}

function show(n) {
  return isInt(n) ? n.toString() : debugFloat(n);
}

/**
 * Handles one message value (bytes): parses it, divides, and returns the
 * output value (bytes). Throws `InvalidInput`.
 */
export function handleValue(bytes) {
  if (bytes.length === 0) {
    throw new InvalidInput('message value is empty; expected a JSON document');
  }
  let input;
  try {
    input = parseBytes(bytes);
  } catch (err) {
    if (err instanceof JsonError) {
      throw new InvalidInput(`message value is not valid JSON: ${err.message}`);
    }
    throw err;
  }
  return toBytes(divide(input));
}

/** The input object with "result": first / second added. */
export function divide(input) {
  if (!isObject(input)) {
    throw new InvalidInput(
      `expected a JSON object with "operator_1" and "operator_2" (or "x" and "y"), got ${describe(input)}`,
    );
  }
  const [first, second] = operands(input);
  const result = quotient(first, second);
  input.result = isInt(result) ? result : new F64(result);
  return input;
}

function isObject(value) {
  return (
    typeof value === 'object' && value !== null && !Array.isArray(value) && !(value instanceof F64)
  );
}

/** Finds and parses the two operands of an object. */
export function operands(object) {
  const has = (name) => Object.hasOwn(object, name);
  let names;
  if (has('operator_1') || has('operator_2')) {
    names = ['operator_1', 'operator_2'];
  } else if (has('x') || has('y')) {
    names = ['x', 'y'];
  } else {
    throw new InvalidInput(
      'missing operands: expected "operator_1" and "operator_2" (or "x" and "y")',
    );
  }
  return names.map((field) => {
    if (!has(field)) {
      throw new InvalidInput(`missing operand "${field}"`);
    }
    return parseOperand(field, object[field]);
  });
}

/**
 * Parses one operand, a JSON number or a string holding a finite number,
 * into a BigInt (a 64-bit integer) or a number (a finite double).
 */
export function parseOperand(field, value) {
  if (typeof value === 'number') {
    return BigInt(value); // a safe integer (see json.js)
  }
  if (typeof value === 'bigint') {
    // Integers between 2^63 and 2^64 - 1 are exact JSON but not i64: doubles.
    return value <= I64_MAX ? value : Number(value);
  }
  if (value instanceof F64) {
    return value.value;
  }
  if (typeof value === 'string') {
    const [n, problem] = parseNumericString(value);
    if (problem !== undefined) {
      throw new InvalidInput(`operand "${field}" ${problem}: ${JSON.stringify(value)}`);
    }
    return n;
  }
  throw new InvalidInput(
    `operand "${field}" must be a number or a numeric string, got ${describe(value)}`,
  );
}

// Rust's `str::trim`: Unicode White_Space at both ends.
const SPACE = '[\\t\\n\\v\\f\\r \\u0085\\u00a0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000]';
const TRIM = new RegExp(`^${SPACE}+|${SPACE}+$`, 'g');
const INTEGER = /^[+-]?[0-9]+$/;
// Rust's float syntax without inf/nan: digits, one point, an exponent.
const DECIMAL = /^[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?$/;

/** A numeric string's value, or what is wrong with it. */
function parseNumericString(raw) {
  const first = raw.charCodeAt(0);
  const last = raw.charCodeAt(raw.length - 1);
  const plain = first > 0x20 && first < 0x7f && last > 0x20 && last < 0x7f;
  const s = plain ? raw : raw.replace(TRIM, '');
  if (INTEGER.test(s)) {
    const n = BigInt(s);
    if (n >= I64_MIN && n <= I64_MAX) {
      return [n, undefined];
    }
  }
  if (!DECIMAL.test(s)) {
    return [undefined, 'is not a number'];
  }
  const x = Number(s);
  return Number.isFinite(x) ? [x, undefined] : [undefined, 'is out of range'];
}

/**
 * first / second: a BigInt when both are integers and it divides exactly,
 * else a (finite) double.
 */
export function quotient(first, second) {
  if (isInt(first) && isInt(second)) {
    if (second === 0n) {
      throw new InvalidInput(`division by zero: ${first} / ${second}`);
    }
    if (first % second === 0n) {
      const q = first / second;
      if (q > I64_MAX) {
        // Only i64::MIN / -1.
        throw new InvalidInput(`integer overflow: ${first} / ${second}`);
      }
      return q;
    }
  }
  const a = Number(first);
  const b = Number(second);
  if (b === 0) {
    throw new InvalidInput(`division by zero: ${show(first)} / ${show(second)}`);
  }
  const result = a / b;
  if (!Number.isFinite(result)) {
    throw new InvalidInput(`result is not a finite number: ${show(first)} / ${show(second)}`);
  }
  return result;
}

/** Names the JSON type of a value for error reasons ("an array", "null"). */
function describe(value) {
  if (value === null) {
    return 'null';
  }
  if (value instanceof F64) {
    return `the number ${formatFloat(value.value)}`;
  }
  switch (typeof value) {
    case 'boolean':
      return String(value);
    case 'bigint':
    case 'number':
      return `the number ${value}`;
    case 'string':
      return `the string ${JSON.stringify(value)}`;
    default:
      return Array.isArray(value) ? 'an array' : 'an object';
  }
}
