// The `divide` stage handler: the exports of the
// `stagehost:handler/stage-handler` world (wit/stage-handler.wit).
//
// {"operation": "div", "operator_1": "6", "operator_2": "3"} becomes
// {"operation": "div", "operator_1": "6", "operator_2": "3", "result": 2}.
// See ./divide.js for the exact rules.
//
// componentize-js maps the world's functions to this module's exports. A
// function returning `result<T, E>` returns T, or throws E: here
// `{ tag: 'invalid-input', val: reason }` or `{ tag: 'transient', val: reason }`.
// Any other exception traps: the host dead-letters the message with the
// error kind `trap` and starts a fresh instance.

import { log } from 'stagehost:handler/log@0.2.0';
import { InvalidInput, handleValue } from './divide.js';

/** Called once per instance with the handler's `settings`; any are accepted. */
export function init(settings) {
  if (settings.length > 0) {
    log('debug', `divide ignores its settings: ${settings.map(([name]) => name).join(', ')}`);
  }
}

/** One message in, one output (the input object plus "result") out. */
export function handle(msg) {
  let value;
  try {
    value = handleValue(msg.value);
  } catch (err) {
    if (err instanceof InvalidInput) {
      throw { tag: 'invalid-input', val: err.message };
    }
    throw err;
  }
  // key: undefined keeps the input key; topic: undefined sends to the stage's output.
  return [{ value, key: undefined, headers: [], topic: undefined }];
}

/**
 * Several messages in one call, one result each, as `handle` gives them.
 * `handle`'s body, inlined: a good message costs no extra call and no thrown
 * value, and the result array is sized once.
 */
export function handleBatch(msgs) {
  const results = new Array(msgs.length);
  for (let index = 0; index < msgs.length; index++) {
    try {
      const value = handleValue(msgs[index].value);
      results[index] = { tag: 'ok', val: [{ value, key: undefined, headers: [], topic: undefined }] };
    } catch (err) {
      if (!(err instanceof InvalidInput)) {
        throw err;
      }
      results[index] = { tag: 'err', val: { tag: 'invalid-input', val: err.message } };
    }
  }
  return results;
}
