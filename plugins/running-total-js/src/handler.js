// The `running-total-js` stage handler: the exports of the
// `stagehost:handler/stage-handler` world (wit/stage-handler.wit), in
// JavaScript.
//
// A running total per account (the value's `account` field, a non-empty
// string), kept in the stage's state under the account's UTF-8 bytes through
// the world's `state` import (`stagehost:handler/state@0.2.0`); see
// ./running-total.js for the rules. The stage needs `state: {}` in the
// config, and keyed messages (key them by account, so that one account's
// messages stay in one partition, in order); the key is checked for, and
// kept on the output, but the logic does not read it.
//
// A function returning `result<T, E>` returns T, or throws E: here
// `{ tag: 'invalid-input', val: reason }`. Any other exception traps: the
// host dead-letters the message with the error kind `trap`, keeps none of
// its state changes, and starts a fresh instance.

import { log } from 'stagehost:handler/log@0.2.0';
import * as state from 'stagehost:handler/state@0.2.0';
import { InvalidInput, runningTotal } from './running-total.js';

/** The seam between the logic and the host: the `state` import. */
const hostState = {
  get: (key) => state.get(key),
  // undefined: no time to live.
  set: (key, value) => state.set(key, value, undefined),
};

/** Called once per instance with the handler's `settings`; any are accepted. */
export function init(settings) {
  if (settings.length > 0) {
    log('debug', `running-total-js ignores its settings: ${settings.map(([name]) => name).join(', ')}`);
  }
}

/** One keyed amount in, one output with the account's new total out. */
export function handle(msg) {
  if (msg.key == null) {
    throw { tag: 'invalid-input', val: 'a running total needs a keyed message' };
  }
  let value;
  try {
    value = runningTotal(hostState, msg.value);
  } catch (err) {
    if (err instanceof InvalidInput) {
      throw { tag: 'invalid-input', val: err.message };
    }
    throw err;
  }
  // key: undefined keeps the input key; topic: undefined sends to the stage's output.
  return [{ value, key: undefined, headers: [], topic: undefined }];
}

/** One result per message, as `handle` gives them (the host calls `handle`
 * for a stage with state, so that each message's changes are its own). */
export function handleBatch(msgs) {
  return msgs.map((msg) => {
    try {
      return { tag: 'ok', val: handle(msg) };
    } catch (err) {
      if (err && (err.tag === 'invalid-input' || err.tag === 'transient')) {
        return { tag: 'err', val: err };
      }
      throw err;
    }
  });
}
