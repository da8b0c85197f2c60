// Unit tests of the divide logic on Node (`npm test`); the component itself is
// exercised through the host by host/tests/foreign_handlers.rs.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { InvalidInput, handleValue } from '../src/divide.js';
import { formatFloat, debugFloat, parse, parseExactly, stringify } from '../src/json.js';

const enc = new TextEncoder();
const dec = new TextDecoder();

/** The handler on a JSON text: the output text, or throws. */
function run(text) {
  return dec.decode(handleValue(enc.encode(text)));
}

function reason(text) {
  try {
    run(text);
  } catch (err) {
    assert.ok(err instanceof InvalidInput, `expected InvalidInput, got ${err}`);
    return err.message;
  }
  assert.fail(`expected invalid-input for ${text}`);
}

test('tutorial message gives an exact integer, keys sorted like serde_json', () => {
  assert.equal(
    run('{"operator_1": "6", "operator_2": "3", "operation": "div"}'),
    '{"operation":"div","operator_1":"6","operator_2":"3","result":2}',
  );
  assert.equal(run('{"x": 6, "y": 3}'), '{"result":2,"x":6,"y":3}');
  assert.equal(run('{"x": -6, "y": 3}'), '{"result":-2,"x":-6,"y":3}');
});

test('integers that do not divide give a float', () => {
  assert.equal(run('{"x": 7, "y": 2}'), '{"result":3.5,"x":7,"y":2}');
  assert.equal(run('{"x": 1, "y": 3}'), '{"result":0.3333333333333333,"x":1,"y":3}');
  assert.equal(run('{"x": "5", "y": "2"}'), '{"result":2.5,"x":"5","y":"2"}');
});

test('a float operand gives a float even when it divides', () => {
  assert.equal(run('{"x": 6.0, "y": 3}'), '{"result":2.0,"x":6.0,"y":3}');
  assert.equal(run('{"x": "1e3", "y": 10}'), '{"result":100.0,"x":"1e3","y":10}');
  assert.equal(run('{"x": 1, "y": 4.0}'), '{"result":0.25,"x":1,"y":4.0}');
});

test('integer division is exact beyond 2^53', () => {
  assert.equal(
    run('{"x": 9007199254740993, "y": 1}'),
    '{"result":9007199254740993,"x":9007199254740993,"y":1}',
  );
  assert.equal(
    run('{"x": "-9223372036854775808", "y": "2"}'),
    '{"result":-4611686018427387904,"x":"-9223372036854775808","y":"2"}',
  );
});

test('division by zero is invalid input', () => {
  assert.equal(reason('{"x": 5, "y": 0}'), 'division by zero: 5 / 0');
  assert.equal(reason('{"operator_1": "5", "operator_2": "0"}'), 'division by zero: 5 / 0');
  assert.equal(reason('{"x": 5, "y": 0.0}'), 'division by zero: 5 / 0.0');
  assert.equal(reason('{"x": 0.5, "y": "-0"}'), 'division by zero: 0.5 / 0');
  assert.equal(reason('{"x": 0, "y": 0}'), 'division by zero: 0 / 0');
});

test('i64::MIN / -1 overflows', () => {
  assert.equal(
    reason('{"x": -9223372036854775808, "y": -1}'),
    'integer overflow: -9223372036854775808 / -1',
  );
});

test('non-finite results are invalid input', () => {
  assert.equal(reason('{"x": 1e308, "y": 1e-308}'), 'result is not a finite number: 1e308 / 1e-308');
});

test('integers beyond i64 are floats', () => {
  assert.equal(
    run('{"x": 18446744073709551615, "y": 1}'),
    '{"result":1.8446744073709552e+19,"x":18446744073709551615,"y":1}',
  );
  assert.equal(run('{"x": 99999999999999999999, "y": 1}'), '{"result":1e+20,"x":1e+20,"y":1}');
  assert.equal(
    run('{"x": "99999999999999999999", "y": "10"}'),
    '{"result":1e+19,"x":"99999999999999999999","y":"10"}',
  );
});

test('whitespace around numeric strings is ignored', () => {
  assert.equal(JSON.parse(run('{"operator_1": "  6\\n", "operator_2": "\\t3 "}')).result, 2);
  assert.equal(JSON.parse(run('{"x": " 1.5 ", "y": "+2"}')).result, 0.75);
});

test('non-numeric operands name the field', () => {
  const cases = [
    ['"five"', 'operand "operator_2" is not a number: "five"'],
    ['""', 'operand "operator_2" is not a number: ""'],
    ['"  "', 'operand "operator_2" is not a number: "  "'],
    ['"1_000"', 'operand "operator_2" is not a number: "1_000"'],
    ['"0x10"', 'operand "operator_2" is not a number: "0x10"'],
    ['"1e"', 'operand "operator_2" is not a number: "1e"'],
    ['"NaN"', 'operand "operator_2" is not a number: "NaN"'],
    ['"Infinity"', 'operand "operator_2" is not a number: "Infinity"'],
    ['"1e400"', 'operand "operator_2" is out of range: "1e400"'],
    ['true', 'operand "operator_2" must be a number or a numeric string, got true'],
    ['null', 'operand "operator_2" must be a number or a numeric string, got null'],
    ['{"v": 1}', 'operand "operator_2" must be a number or a numeric string, got an object'],
    ['[1]', 'operand "operator_2" must be a number or a numeric string, got an array'],
  ];
  for (const [value, expected] of cases) {
    assert.equal(
      reason(`{"operation": "div", "operator_1": "5", "operator_2": ${value}}`),
      expected,
    );
  }
});

test('missing operands are named', () => {
  assert.equal(
    reason('{"operation": "div"}'),
    'missing operands: expected "operator_1" and "operator_2" (or "x" and "y")',
  );
  assert.equal(reason('{"x": 1}'), 'missing operand "y"');
  assert.equal(reason('{"operator_1": 1, "y": 2}'), 'missing operand "operator_2"');
});

test('non-objects and bad JSON are invalid input', () => {
  const prefix =
    'expected a JSON object with "operator_1" and "operator_2" (or "x" and "y"), got ';
  assert.equal(reason('[1, 2]'), `${prefix}an array`);
  assert.equal(reason('"hi"'), `${prefix}the string "hi"`);
  assert.equal(reason('42'), `${prefix}the number 42`);
  assert.equal(reason('1.5'), `${prefix}the number 1.5`);
  assert.equal(reason('null'), `${prefix}null`);
  assert.equal(reason(''), 'message value is empty; expected a JSON document');
  for (const bad of ['{not json', '{"x": 1,}', '[1] 2', 'NaN', '{"x": 01}', '{"x": 1e999}', '"\\ud800"']) {
    assert.match(reason(bad), /^message value is not valid JSON: /, bad);
  }
  // The reasons serde_json gives for the same texts.
  assert.equal(reason('{not json'), 'message value is not valid JSON: key must be a string at line 1 column 2');
  assert.equal(reason('{"x": 1,}'), 'message value is not valid JSON: trailing comma at line 1 column 9');
  assert.equal(reason('{"x": 01}'), 'message value is not valid JSON: invalid number at line 1 column 8');
  assert.equal(reason('1e999'), 'message value is not valid JSON: number out of range at line 1 column 5');
  assert.equal(reason('{\n"x" 1}'), 'message value is not valid JSON: expected `:` at line 2 column 5');
  assert.equal(
    reason('{"x": "\\udc00", "y": 1}'),
    'message value is not valid JSON: lone leading surrogate in hex escape at line 1 column 13',
  );
  assert.equal(
    reason('{"x": "\\ud800\\u0041", "y": 1}'),
    'message value is not valid JSON: lone leading surrogate in hex escape at line 1 column 19',
  );
  assert.equal(
    reason('['.repeat(128) + ']'.repeat(128)),
    'message value is not valid JSON: recursion limit exceeded at line 1 column 128',
  );
  assert.equal(
    reason(`{"x": ${'['.repeat(200)}`),
    'message value is not valid JSON: recursion limit exceeded at line 1 column 133',
  );
  // Not UTF-8.
  assert.throws(() => handleValue(new Uint8Array([0x7b, 0xff, 0x7d])), InvalidInput);
});

test('an existing result is replaced and other fields are kept', () => {
  assert.equal(
    run('{"x": 1, "y": 2, "result": "old", "note": "é\\u0001/", "n": [1.50, {"b": null, "a": true}]}'),
    '{"n":[1.5,{"a":true,"b":null}],"note":"é\\u0001/","result":0.5,"x":1,"y":2}',
  );
});

test('floats are written as serde_json writes them', () => {
  const cases = [
    [7, '7.0'],
    [0.25, '0.25'],
    [-0, '-0.0'],
    [1e15, '1000000000000000.0'],
    [1e16, '1e+16'],
    [1.5e300, '1.5e+300'],
    [1e-5, '0.00001'],
    [1.25e-5, '0.0000125'],
    [1e-6, '1e-6'],
    [123.456, '123.456'],
    [5e-324, '5e-324'],
  ];
  for (const [x, text] of cases) {
    assert.equal(formatFloat(x), text, String(x));
  }
  assert.equal(debugFloat(1e-5), '1e-5');
  assert.equal(debugFloat(0.0001), '0.0001');
  assert.equal(debugFloat(2), '2.0');
});

test('JSON round trip keeps exact integers', () => {
  const text = '{"a":[-9223372036854775808,18446744073709551615,0,-0.0,"\\u00e9\\ud83d\\ude00"]}';
  assert.equal(stringify(parse(text)), '{"a":[-9223372036854775808,18446744073709551615,0,-0.0,"é😀"]}');
});

test('the fast path (JSON.parse) and the exact parser agree', () => {
  const texts = [
    '{"operation":"div","operator_1":"6","operator_2":"3"}',
    '{"x": 6, "y": -3, "z": -0, "n": null, "t": true, "f": false, "a": [1, [2, {"b": "c"}]]}',
    '{"x": 6.0, "y": 3}',
    '{"x": 1e3, "y": 3E2, "z": 1.5e-7}',
    '{"x": 123456789012345, "y": 1234567890123456, "z": -9223372036854775808}',
    '{"__proto__": 1, "constructor": 2, "10": 3, "9": 4, "é": 5, "😀": 6, "\uffff": 7}',
    '{"x": "a:1.5", "y": "\\ud83d\\ude00", "k": "\\\\ud800", "e": "\u00e9\\u00e9"}',
    '{"dup": 1, "dup": 2}',
    '  [1 , 2 ]  ',
    '-0',
    '42',
    '"s"',
    '['.repeat(127) + ']'.repeat(127),
  ];
  for (const text of texts) {
    assert.equal(stringify(parse(text)), stringify(parseExactly(text)), text);
  }
  assert.equal(stringify(parse('{"b": 1, "a": 2, "\uffff": 3, "😀": 4}')), '{"a":2,"b":1,"\uffff":3,"😀":4}');
  assert.equal(stringify(parse('{"x": 6.0, "y": 123456789012345678}')), '{"x":6.0,"y":123456789012345678}');
});
