// The `running-total-js` handler's logic: a running total per account, kept
// in the stage's state, as the Rust `plugins/running-total` does it.
//
// The account is the value's `account` field, a non-empty JSON string, and
// the state key is its UTF-8 bytes; the message key plays no part.
// {"account": "alice", "amount": 5} becomes
// {"account": "alice", "amount": 5, "total": 12, "count": 3} when alice's
// earlier amounts summed to 7 over two messages, and the state under the
// bytes of `alice` becomes {"count":3,"total":12}. A value that is not a JSON
// object, an account that is missing or not a non-empty string, an amount
// that is not a 64-bit integer (5.0, "5", true are not), or a total that
// would leave the 64-bit range is `InvalidInput` and changes nothing.
//
// JSON is read with plugins/divide's exact reader (../../divide/src/json.js),
// so integers beyond 2^53 stay exact (as BigInts) and 5.0 stays a double.
//
// The state is reached through a *store*, any object with
// `get(key) -> Uint8Array | undefined` and `set(key, value)`: in the
// component the host's `state` import (see handler.js), in the tests a Map.
// Nothing here imports the component bindings, so it is tested on Node
// (`npm test` in this folder).

import { F64, JsonError, parseBytes, toBytes } from '../../divide/src/json.js';

const I64_MIN = -(2n ** 63n);
const I64_MAX = 2n ** 63n - 1n;

/** The message cannot be processed: dead-letter it (`invalid-input`). */
export class InvalidInput extends Error {}

// The parser rejects lone surrogates, so an account's UTF-8 is exact.
const keyEncoder = new TextEncoder();

/** `value` as a BigInt if it is a JSON integer within 64 bits (serde_json's `as_i64`). */
function i64(value) {
  let n;
  if (typeof value === 'number' && Number.isInteger(value)) {
    n = BigInt(value);
  } else if (typeof value === 'bigint') {
    n = value;
  } else {
    return undefined; // F64 (a double), strings, booleans, ...
  }
  return n >= I64_MIN && n <= I64_MAX ? n : undefined;
}

/** A BigInt as the JSON writer takes it: a number when exact, else a BigInt. */
function number(n) {
  return n >= BigInt(Number.MIN_SAFE_INTEGER) && n <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(n) : n;
}

function isObject(doc) {
  return doc !== null && typeof doc === 'object' && !Array.isArray(doc) && !(doc instanceof F64);
}

/** The account's saved [total, count]; [0n, 0n] for a new or unreadable entry. */
export function totals(store, key) {
  const bytes = store.get(key);
  let saved = {};
  if (bytes != null) {
    try {
      saved = parseBytes(bytes);
    } catch {
      saved = {};
    }
  }
  if (!isObject(saved)) {
    saved = {};
  }
  const total = i64(saved.total) ?? 0n;
  const count = i64(saved.count);
  return [total, count !== undefined && count >= 0n ? count : 0n];
}

/** The value's `account`: a non-empty string, or `InvalidInput`. */
function accountOf(doc) {
  const account = isObject(doc) && Object.hasOwn(doc, 'account') ? doc.account : undefined;
  if (typeof account !== 'string' || account === '') {
    throw new InvalidInput('"account" must be a non-empty string');
  }
  return account;
}

/** Adds one message's amount to its account's total; the output value (bytes). */
export function runningTotal(store, value) {
  let doc;
  try {
    doc = parseBytes(value);
  } catch (err) {
    if (err instanceof JsonError) {
      throw new InvalidInput(`message value is not valid JSON: ${err.message}`);
    }
    throw err;
  }
  const account = accountOf(doc);
  const key = keyEncoder.encode(account);
  const amount = Object.hasOwn(doc, 'amount') ? i64(doc.amount) : undefined;
  if (amount === undefined) {
    throw new InvalidInput('"amount" must be an integer');
  }
  let [total, count] = totals(store, key);
  total += amount;
  if (total < I64_MIN || total > I64_MAX) {
    throw new InvalidInput('the total would overflow');
  }
  count += 1n;
  store.set(key, toBytes({ count: number(count), total: number(total) }));
  // toBytes sorts keys; the host compares parsed JSON.
  return toBytes({
    account,
    amount: number(amount),
    total: number(total),
    count: number(count),
  });
}
