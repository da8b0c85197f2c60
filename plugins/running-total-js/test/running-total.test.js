// Unit tests of the running-total logic on Node (`npm test`), with a Map for
// the host's state; the component itself runs through the host in
// host/tests/stateful_polyglot.rs.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { InvalidInput, runningTotal } from '../src/running-total.js';

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** A store as the logic sees the host's state, keyed by the key's bytes (as hex). */
class MapStore {
  constructor(entries = {}) {
    this.map = new Map(Object.entries(entries).map(([key, value]) => [hex(encoder.encode(key)), encoder.encode(value)]));
  }
  get(key) {
    return this.map.get(hex(key));
  }
  set(key, value) {
    assert.ok(key instanceof Uint8Array, 'state keys are bytes');
    this.map.set(hex(key), value);
  }
  text(key) {
    return decoder.decode(this.map.get(hex(encoder.encode(key))));
  }
  keys() {
    return [...this.map.keys()];
  }
}

function hex(bytes) {
  return Buffer.from(bytes).toString('hex');
}

/** The output of one value (JSON text), as the text. */
function runText(store, value) {
  return decoder.decode(runningTotal(store, encoder.encode(value)));
}

function run(store, value) {
  return JSON.parse(runText(store, value));
}

/** `{"account": account, "amount": amount}` as JSON text. */
function amount(account, amount) {
  return `{"account": ${JSON.stringify(account)}, "amount": ${amount}}`;
}

test('totals add up per account', () => {
  const store = new MapStore();
  assert.deepEqual(run(store, '{"account": "alice", "amount": 5}'), { account: 'alice', amount: 5, total: 5, count: 1 });
  run(store, amount('bob', 100));
  assert.deepEqual(run(store, '{"amount": -2, "account": "alice", "note": "x"}'),
    { account: 'alice', amount: -2, total: 3, count: 2 });
  assert.equal(store.text('alice'), '{"count":2,"total":3}');
  assert.equal(store.text('bob'), '{"count":1,"total":100}');
  assert.deepEqual(store.keys().sort(), [hex(encoder.encode('alice')), hex(encoder.encode('bob'))]);
});

test("the state key is the account's UTF-8", () => {
  const store = new MapStore();
  // An escaped and a literal "ë" (and a surrogate pair) are the same account.
  run(store, '{"account": "zo\\u00eb \\ud83d\\ude00", "amount": 2}');
  assert.equal(runText(store, amount('zoë 😀', 3)), '{"account":"zoë 😀","amount":3,"count":2,"total":5}');
  assert.deepEqual(store.keys(), ['7a6fc3ab20f09f9880']);
});

test('it reads state the Rust handler wrote', () => {
  const store = new MapStore({ carol: '{"count":10,"total":70}' });
  assert.deepEqual(run(store, amount('carol', 1)), { account: 'carol', amount: 1, total: 71, count: 11 });
});

test('a missing or bad account changes nothing', () => {
  const store = new MapStore();
  run(store, amount('dave', 1));
  for (const value of ['{"amount": 1}', '{"account": "", "amount": 1}', '{"account": null, "amount": 1}',
    '{"account": 7, "amount": 1}', '{"account": true, "amount": 1}', '{"account": ["dave"], "amount": 1}',
    '{"account": {"id": "dave"}, "amount": 1}', '[1]', '"dave"', '{}']) {
    assert.throws(() => run(store, value), { message: '"account" must be a non-empty string' }, value);
    assert.throws(() => run(store, value), InvalidInput, value);
  }
  assert.throws(() => run(store, '{"account": "\\ud800", "amount": 1}'), InvalidInput);
  assert.deepEqual(store.keys(), [hex(encoder.encode('dave'))]);
  assert.equal(store.text('dave'), '{"count":1,"total":1}');
  assert.equal(run(store, amount('dave', 1)).total, 2);
});

test('a bad amount changes nothing', () => {
  const store = new MapStore();
  run(store, amount('dave', 1));
  for (const value of ['"x"', '1.0', 'true', 'null', '[1]', '9223372036854775808']) {
    assert.throws(() => run(store, amount('dave', value)), { message: '"amount" must be an integer' }, value);
    assert.throws(() => run(store, amount('dave', value)), InvalidInput, value);
  }
  for (const value of ['{"account": "dave"}', 'not json']) {
    assert.throws(() => run(store, value), InvalidInput, value);
  }
  assert.throws(() => runningTotal(store, new Uint8Array([0xff])), InvalidInput);
  assert.equal(run(store, amount('dave', 1)).total, 2);
});

test('totals stay exact beyond 2^53 and overflow changes nothing', () => {
  const store = new MapStore();
  const out = runText(store, amount('erin', '9223372036854775807'));
  assert.equal(out, '{"account":"erin","amount":9223372036854775807,"count":1,"total":9223372036854775807}');
  assert.throws(() => run(store, amount('erin', 1)), { message: 'the total would overflow' });
  assert.match(runText(store, amount('erin', -1)), /"total":9223372036854775806/);
});
