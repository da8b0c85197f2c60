// JSON the way the Rust handlers (serde_json) read and write it, so that a
// message routed to `divide` comes out shaped exactly like one routed to `add`.
//
// The values: null, booleans, strings, arrays and objects as JSON.parse makes
// them, and numbers kept as serde_json keeps them:
//
// - an integer is a JavaScript number (a safe integer, never -0) or, beyond
//   2^53, a BigInt; integer literals between -2^63 and 2^64 - 1 stay exact,
//   larger ones are read as doubles, as serde_json does;
// - a double is an `F64`, so `6.0` stays a double (and `-0` is one).
//
// Output is compact, with object keys in sorted order and doubles written the
// way serde_json writes them (`7.0`, `0.25`, `1e+20`, `1e-7`).
//
// Parsing is strict RFC 8259: UTF-8 only, no BOM, no comments, no trailing
// commas, no NaN/Infinity, no lone surrogates, at most 127 nested arrays or
// objects (serde_json's limit).

/** Why a message value is not valid JSON. */
export class JsonError extends Error {}

/** A JSON number that is a double (a literal with a fraction or an exponent). */
export class F64 {
  constructor(value) {
    this.value = value;
  }
}

const MAX_DEPTH = 127;
const I64_MIN = -(2n ** 63n);
const U64_MAX = 2n ** 64n - 1n;

const decoder = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });
const encoder = new TextEncoder();

/** Parses UTF-8 bytes as one JSON document. Throws `JsonError`. */
export function parseBytes(bytes) {
  let text;
  try {
    text = decoder.decode(bytes);
  } catch {
    throw new JsonError('invalid UTF-8');
  }
  return parse(text);
}

/** Serialises a value compactly to UTF-8 bytes. */
export function toBytes(value) {
  return encoder.encode(stringify(value));
}

// Where JSON.parse would lose what serde_json keeps: a number with a
// fraction or an exponent (a double, even `6.0`), `-0` (a double too), an
// integer of 16 or more digits (maybe beyond 2^53), or a \u escape of a
// surrogate (maybe a lone one). JSON puts a number only after `:`, `,`, `[`
// or at the start; a match inside a string merely takes the exact path.
const NEEDS_EXACT_PARSER =
  /(?:^|[:,[])[\t\n\r ]*(?:-?[0-9]+[.eE]|-0|-?[0-9]{16})|\\u[dD][89abcdefABCDEF]/;
// More than MAX_DEPTH brackets: maybe nested too deep for serde_json.
const MANY_BRACKETS = new RegExp(`(?:[^[{]*[[{]){${MAX_DEPTH + 1}}`, 'y');

/** Parses a string as one JSON document. Throws `JsonError`. */
export function parse(text) {
  // The fast path: JSON.parse is native code, while the exact parser below is
  // interpreted (there is no JIT inside a component) and much slower.
  MANY_BRACKETS.lastIndex = 0;
  if (!NEEDS_EXACT_PARSER.test(text) && !MANY_BRACKETS.test(text)) {
    try {
      return JSON.parse(text);
    } catch {
      // Invalid: the exact parser says why, as serde_json would.
    }
  }
  return parseExactly(text);
}

/** Parses a string as one JSON document, exactly. Throws `JsonError`. */
export function parseExactly(text) {
  const parser = new Parser(text);
  parser.skipWhitespace();
  const value = parser.value(0);
  parser.skipWhitespace();
  if (parser.pos < text.length) {
    parser.fail('trailing characters');
  }
  return value;
}

class Parser {
  constructor(text) {
    this.text = text;
    this.pos = 0;
  }

  fail(what) {
    // The 1-based line and column of the offending character (the last one
    // at the end of the text), as serde_json reports them.
    const at = Math.max(0, Math.min(this.pos, this.text.length - 1));
    let line = 1;
    let column = 1;
    for (let i = 0; i < at; i++) {
      if (this.text[i] === '\n') {
        line += 1;
        column = 1;
      } else {
        column += 1;
      }
    }
    throw new JsonError(`${what} at line ${line} column ${column}`);
  }

  skipWhitespace() {
    const text = this.text;
    while (this.pos < text.length) {
      const c = text.charCodeAt(this.pos);
      if (c !== 0x20 && c !== 0x0a && c !== 0x0d && c !== 0x09) {
        break;
      }
      this.pos += 1;
    }
  }

  value(depth) {
    const text = this.text;
    if (this.pos >= text.length) {
      this.fail('EOF while parsing a value');
    }
    const c = text[this.pos];
    if (c === '{' || c === '[') {
      if (depth >= MAX_DEPTH) {
        this.fail('recursion limit exceeded');
      }
      return c === '{' ? this.object(depth + 1) : this.array(depth + 1);
    }
    if (c === '"') {
      return this.string();
    }
    if (c === '-' || (c >= '0' && c <= '9')) {
      return this.number();
    }
    for (const [word, value] of [
      ['true', true],
      ['false', false],
      ['null', null],
    ]) {
      if (text.startsWith(word, this.pos)) {
        this.pos += word.length;
        return value;
      }
    }
    this.fail('expected value');
  }

  object(depth) {
    // No prototype: a key "__proto__" is then an ordinary property.
    const object = Object.create(null);
    this.pos += 1; // {
    this.skipWhitespace();
    if (this.text[this.pos] === '}') {
      this.pos += 1;
      return object;
    }
    for (let first = true; ; first = false) {
      this.skipWhitespace();
      if (this.text[this.pos] !== '"') {
        if (this.pos >= this.text.length) {
          this.fail(first ? 'EOF while parsing an object' : 'EOF while parsing a value');
        }
        this.fail(!first && this.text[this.pos] === '}' ? 'trailing comma' : 'key must be a string');
      }
      const key = this.string();
      this.skipWhitespace();
      if (this.text[this.pos] !== ':') {
        this.fail(this.pos >= this.text.length ? 'EOF while parsing an object' : 'expected `:`');
      }
      this.pos += 1;
      this.skipWhitespace();
      object[key] = this.value(depth);
      this.skipWhitespace();
      const next = this.text[this.pos];
      this.pos += 1;
      if (next === '}') {
        return object;
      }
      if (next !== ',') {
        this.pos -= 1;
        this.fail(next === undefined ? 'EOF while parsing an object' : 'expected `,` or `}`');
      }
    }
  }

  array(depth) {
    const items = [];
    this.pos += 1; // [
    this.skipWhitespace();
    if (this.text[this.pos] === ']') {
      this.pos += 1;
      return items;
    }
    for (;;) {
      this.skipWhitespace();
      if (items.length > 0 && this.text[this.pos] === ']') {
        this.fail('trailing comma');
      }
      items.push(this.value(depth));
      this.skipWhitespace();
      const next = this.text[this.pos];
      this.pos += 1;
      if (next === ']') {
        return items;
      }
      if (next !== ',') {
        this.pos -= 1;
        this.fail(next === undefined ? 'EOF while parsing a list' : 'expected `,` or `]`');
      }
    }
  }

  string() {
    const text = this.text;
    this.pos += 1; // "
    let out = '';
    let start = this.pos;
    for (;;) {
      if (this.pos >= text.length) {
        this.fail('EOF while parsing a string');
      }
      const c = text.charCodeAt(this.pos);
      if (c === 0x22) {
        out += text.slice(start, this.pos);
        this.pos += 1;
        return out;
      }
      if (c < 0x20) {
        this.fail('control character (\\u0000-\\u001F) found while parsing a string');
      }
      if (c >= 0xd800 && c <= 0xdfff) {
        // Well-formed input decoded from UTF-8 has only paired surrogates here.
        this.pos += 2;
        continue;
      }
      if (c !== 0x5c) {
        this.pos += 1;
        continue;
      }
      out += text.slice(start, this.pos);
      this.pos += 1; // backslash
      const escape = text[this.pos];
      this.pos += 1;
      switch (escape) {
        case '"':
          out += '"';
          break;
        case '\\':
          out += '\\';
          break;
        case '/':
          out += '/';
          break;
        case 'b':
          out += '\b';
          break;
        case 'f':
          out += '\f';
          break;
        case 'n':
          out += '\n';
          break;
        case 'r':
          out += '\r';
          break;
        case 't':
          out += '\t';
          break;
        case 'u': {
          const unit = this.hex4();
          if (unit >= 0xdc00 && unit <= 0xdfff) {
            this.pos -= 1;
            this.fail('lone leading surrogate in hex escape');
          }
          if (unit >= 0xd800 && unit <= 0xdbff) {
            if (text[this.pos] !== '\\' || text[this.pos + 1] !== 'u') {
              this.fail('unexpected end of hex escape');
            }
            this.pos += 2;
            const low = this.hex4();
            if (low < 0xdc00 || low > 0xdfff) {
              this.pos -= 1;
              this.fail('lone leading surrogate in hex escape');
            }
            out += String.fromCharCode(unit, low);
          } else {
            out += String.fromCharCode(unit);
          }
          break;
        }
        default:
          this.pos -= 1;
          this.fail(escape === undefined ? 'EOF while parsing a string' : 'invalid escape');
      }
      start = this.pos;
    }
  }

  hex4() {
    const digits = this.text.slice(this.pos, this.pos + 4);
    if (!/^[0-9a-fA-F]{4}$/.test(digits)) {
      this.fail('invalid escape');
    }
    this.pos += 4;
    return parseInt(digits, 16);
  }

  number() {
    const match = /-?(?:0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?/y;
    match.lastIndex = this.pos;
    const found = match.exec(this.text);
    if (found === null) {
      this.fail('invalid number');
    }
    const literal = found[0];
    // A digit or point right after a complete number is malformed ("01", "1.").
    const after = this.text[this.pos + literal.length];
    if (after !== undefined && /[0-9.eE+-]/.test(after)) {
      this.pos += literal.length;
      this.fail('invalid number');
    }
    this.pos += literal.length;
    if (found[1] === undefined && found[2] === undefined && literal !== '-0') {
      // serde_json reads `-0` as the double -0.0.
      const x = Number(literal);
      if (Number.isSafeInteger(x)) {
        return x;
      }
      const n = BigInt(literal);
      if (n >= I64_MIN && n <= U64_MAX) {
        return n;
      }
    }
    const x = Number(literal);
    if (!Number.isFinite(x)) {
      this.pos -= 1;
      this.fail('number out of range');
    }
    return new F64(x);
  }
}

/** Serialises a value as compact JSON with sorted object keys. */
export function stringify(value) {
  switch (typeof value) {
    case 'bigint':
    case 'number':
      return String(value);
    case 'string':
      return JSON.stringify(value);
    case 'boolean':
      return value ? 'true' : 'false';
    default:
      break;
  }
  if (value === null) {
    return 'null';
  }
  if (value instanceof F64) {
    return formatFloat(value.value);
  }
  if (Array.isArray(value)) {
    return `[${value.map(stringify).join(',')}]`;
  }
  // The default sort compares UTF-16 units: code point order unless a key
  // holds a character beyond U+FFFF.
  const keys = Object.keys(value).sort();
  if (/[\ud800-\udfff]/.test(keys.join(''))) {
    keys.sort(compareCodePoints);
  }
  let out = '{';
  for (let i = 0; i < keys.length; i++) {
    out += `${i === 0 ? '' : ','}${JSON.stringify(keys[i])}:${stringify(value[keys[i]])}`;
  }
  return `${out}}`;
}

/** Orders strings by code point, as Rust orders `String`s (UTF-8 bytes). */
function compareCodePoints(a, b) {
  const x = [...a];
  const y = [...b];
  for (let i = 0; i < x.length && i < y.length; i++) {
    const d = x[i].codePointAt(0) - y[i].codePointAt(0);
    if (d !== 0) {
      return d;
    }
  }
  return x.length - y.length;
}

/**
 * The shortest decimal digits of a finite, non-zero double and their
 * exponent: x = ±digits × 10^exponent, digits without leading or trailing zeros.
 */
function decompose(x) {
  const [mantissa, exp] = Math.abs(x).toExponential().split('e');
  let digits = mantissa.replace('.', '');
  let exponent = Number(exp) - (digits.length - 1);
  while (digits.length > 1 && digits.endsWith('0')) {
    digits = digits.slice(0, -1);
    exponent += 1;
  }
  return { digits, exponent };
}

/** A double as serde_json 1.0.154 writes it: shortest digits, `1e+16`, `1e-6`. */
export function formatFloat(x) {
  if (x === 0) {
    return Object.is(x, -0) ? '-0.0' : '0.0';
  }
  const abs = Math.abs(x);
  if (abs >= 1e-5 && abs < 1e16) {
    // JavaScript writes the same shortest digits without an exponent here.
    const text = String(x);
    return text.includes('.') ? text : `${text}.0`;
  }
  const sign = x < 0 ? '-' : '';
  const { digits, exponent: k } = decompose(x);
  const length = digits.length;
  const kk = length + k; // 10^(kk-1) <= |x| < 10^kk
  if (k >= 0 && kk <= 16) {
    return `${sign}${digits}${'0'.repeat(k)}.0`;
  }
  if (kk > 0 && kk <= 16) {
    return `${sign}${digits.slice(0, kk)}.${digits.slice(kk)}`;
  }
  if (kk > -5 && kk <= 0) {
    return `${sign}0.${'0'.repeat(-kk)}${digits}`;
  }
  const rest = length === 1 ? '' : `.${digits.slice(1)}`;
  const exponent = kk - 1;
  return `${sign}${digits[0]}${rest}e${exponent > 0 ? '+' : ''}${exponent}`;
}

/** A double as Rust's `{:?}` shows it (used in error reasons, like `calc`). */
export function debugFloat(x) {
  if (x === 0) {
    return Object.is(x, -0) ? '-0.0' : '0.0';
  }
  const abs = Math.abs(x);
  if (abs >= 1e-4 && abs < 1e16) {
    const text = formatFloat(x);
    return text;
  }
  const sign = x < 0 ? '-' : '';
  const { digits, exponent } = decompose(x);
  const rest = digits.length === 1 ? '' : `.${digits.slice(1)}`;
  return `${sign}${digits[0]}${rest}e${exponent + digits.length - 1}`;
}
