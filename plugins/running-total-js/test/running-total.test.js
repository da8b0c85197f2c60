// Unit tests of the running-total logic on Node (`npm test`), with a Map for
// the host's state; the component itself runs through the host in
// host/tests/stateful_polyglot.rs.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { InvalidInput, runningTotal } from '../src/running-total.js';

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** A store as the logic sees the host's state, keyed by the key's text. */
class MapStore {
  constructor(entries = {}) {
    this.map = new Map(Object.entries(entries).map(([key, value]) => [key, encoder.encode(value)]));
  }
  get(key) {
    return this.map.get(decoder.decode(key));
  }
  set(key, value) {
    this.map.set(decoder.decode(key), value);
  }
  text(key) {
    return decoder.decode(this.map.get(key));
  }
}

function run(store, key, value) {
  return JSON.parse(decoder.decode(runningTotal(store, encoder.encode(key), encoder.encode(value))));
}

test('totals add up per account', () => {
  const store = new MapStore();
  assert.deepEqual(run(store, 'alice', '{"amount": 5}'), { account: 'alice', amount: 5, total: 5, count: 1 });
  run(store, 'bob', '{"amount": 100}');
  assert.deepEqual(run(store, 'alice', '{"amount": -2}'), { account: 'alice', amount: -2, total: 3, count: 2 });
  assert.equal(store.text('alice'), '{"count":2,"total":3}');
  assert.equal(store.text('bob'), '{"count":1,"total":100}');
});

test('it reads state the Rust handler wrote', () => {
  const store = new MapStore({ carol: '{"count":10,"total":70}' });
  assert.deepEqual(run(store, 'carol', '{"amount": 1}'), { account: 'carol', amount: 1, total: 71, count: 11 });
});

test('a bad amount changes nothing', () => {
  const store = new MapStore();
  run(store, 'dave', '{"amount": 1}');
  for (const value of ['{"amount": "x"}', '{"amount": 1.0}', '{"amount": true}', '{}', '[1]', 'not json',
    '{"amount": 9223372036854775808}']) {
    assert.throws(() => run(store, 'dave', value), InvalidInput, value);
  }
  assert.throws(() => runningTotal(store, encoder.encode('dave'), new Uint8Array([0xff])), InvalidInput);
  assert.equal(run(store, 'dave', '{"amount": 1}').total, 2);
});

test('totals stay exact beyond 2^53 and overflow changes nothing', () => {
  const store = new MapStore();
  const out = decoder.decode(runningTotal(store, encoder.encode('erin'), encoder.encode('{"amount": 9223372036854775807}')));
  assert.equal(out, '{"account":"erin","amount":9223372036854775807,"count":1,"total":9223372036854775807}');
  assert.throws(() => run(store, 'erin', '{"amount": 1}'), { message: 'the total would overflow' });
  const next = decoder.decode(runningTotal(store, encoder.encode('erin'), encoder.encode('{"amount": -1}')));
  assert.match(next, /"total":9223372036854775806/);
});
