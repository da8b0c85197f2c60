"""Unit tests of the multiply logic on the local Python (``python3 -m unittest``);
the component itself is exercised through the host by
host/tests/foreign_handlers.rs."""

import unittest

from multiply import InvalidInput, _dumps, debug_float, dumps, format_float, handle_value


def run(text: str) -> str:
    return handle_value(text.encode()).decode()


class MultiplyTest(unittest.TestCase):
    def reason(self, text: str) -> str:
        with self.assertRaises(InvalidInput) as caught:
            run(text)
        return str(caught.exception)

    def test_tutorial_message_sorted_like_serde_json(self):
        self.assertEqual(
            run('{"operator_1": "6", "operator_2": "7", "operation": "mul"}'),
            '{"operation":"mul","operator_1":"6","operator_2":"7","result":42}',
        )
        self.assertEqual(run('{"x": 6, "y": 7}'), '{"result":42,"x":6,"y":7}')
        self.assertEqual(run('{"x": -6, "y": 7}'), '{"result":-42,"x":-6,"y":7}')

    def test_floats_stay_floats(self):
        self.assertEqual(run('{"x": 6.0, "y": 7}'), '{"result":42.0,"x":6.0,"y":7}')
        self.assertEqual(run('{"x": "0.5", "y": "0.5"}'), '{"result":0.25,"x":"0.5","y":"0.5"}')
        self.assertEqual(run('{"x": "1e3", "y": 2}'), '{"result":2000.0,"x":"1e3","y":2}')
        self.assertEqual(run('{"x": 1.5, "y": 2}'), '{"result":3.0,"x":1.5,"y":2}')

    def test_integer_product_is_exact_within_64_bits(self):
        self.assertEqual(
            run('{"x": 3037000499, "y": 3037000499}'),
            '{"result":9223372030926249001,"x":3037000499,"y":3037000499}',
        )
        self.assertEqual(
            run('{"x": "-4611686018427387904", "y": "2"}'),
            '{"result":-9223372036854775808,"x":"-4611686018427387904","y":"2"}',
        )

    def test_integer_overflow_is_invalid_input(self):
        self.assertEqual(
            self.reason('{"x": 9223372036854775807, "y": 2}'),
            "integer overflow: 9223372036854775807 * 2",
        )
        self.assertEqual(
            self.reason('{"operator_1": "-9223372036854775808", "operator_2": "-1"}'),
            "integer overflow: -9223372036854775808 * -1",
        )

    def test_integers_beyond_i64_are_floats(self):
        self.assertEqual(
            run('{"x": 18446744073709551615, "y": 1}'),
            '{"result":1.8446744073709552e+19,"x":18446744073709551615,"y":1}',
        )
        self.assertEqual(run('{"x": 99999999999999999999, "y": 1}'), '{"result":1e+20,"x":1e+20,"y":1}')
        self.assertEqual(
            run('{"x": "99999999999999999999", "y": 2}'),
            '{"result":2e+20,"x":"99999999999999999999","y":2}',
        )

    def test_non_finite_results_are_invalid_input(self):
        self.assertEqual(
            self.reason('{"operator_1": "1e308", "operator_2": "10"}'),
            "result is not a finite number: 1e308 * 10",
        )

    def test_whitespace_in_strings_is_tolerated(self):
        self.assertIn('"result":42', run('{"operator_1": "  6\\n", "operator_2": "\\t7 "}'))
        self.assertIn('"result":3.0', run('{"x": " 1.5 ", "y": "+2"}'))

    def test_non_numeric_operands_name_the_field(self):
        cases = [
            ('"five"', 'operand "operator_2" is not a number: "five"'),
            ('""', 'operand "operator_2" is not a number: ""'),
            ('"  "', 'operand "operator_2" is not a number: "  "'),
            ('"1_000"', 'operand "operator_2" is not a number: "1_000"'),
            ('"0x10"', 'operand "operator_2" is not a number: "0x10"'),
            ('"1e"', 'operand "operator_2" is not a number: "1e"'),
            ('"NaN"', 'operand "operator_2" is not a number: "NaN"'),
            ('"-inf"', 'operand "operator_2" is not a number: "-inf"'),
            ('"\u0661"', 'operand "operator_2" is not a number: "\u0661"'),
            ('"1e400"', 'operand "operator_2" is out of range: "1e400"'),
            ("true", 'operand "operator_2" must be a number or a numeric string, got true'),
            ("null", 'operand "operator_2" must be a number or a numeric string, got null'),
            ('{"v": 1}', 'operand "operator_2" must be a number or a numeric string, got an object'),
            ("[1]", 'operand "operator_2" must be a number or a numeric string, got an array'),
        ]
        for value, expected in cases:
            with self.subTest(value=value):
                self.assertEqual(
                    self.reason(f'{{"operation": "mul", "operator_1": "5", "operator_2": {value}}}'),
                    expected,
                )

    def test_missing_operands_are_named(self):
        self.assertEqual(
            self.reason('{"operation": "mul"}'),
            'missing operands: expected "operator_1" and "operator_2" (or "x" and "y")',
        )
        self.assertEqual(self.reason('{"x": 1}'), 'missing operand "y"')
        self.assertEqual(self.reason('{"operator_1": 1, "y": 2}'), 'missing operand "operator_2"')

    def test_non_objects_and_bad_json_are_invalid_input(self):
        prefix = 'expected a JSON object with "operator_1" and "operator_2" (or "x" and "y"), got '
        self.assertEqual(self.reason("[1, 2]"), prefix + "an array")
        self.assertEqual(self.reason('"hi"'), prefix + 'the string "hi"')
        self.assertEqual(self.reason("42"), prefix + "the number 42")
        self.assertEqual(self.reason("1.5"), prefix + "the number 1.5")
        self.assertEqual(self.reason("false"), prefix + "false")
        self.assertEqual(self.reason(""), "message value is empty; expected a JSON document")
        for bad in ["{not json", '{"x": 1,}', "[1] 2", "NaN", '{"x": 01}', '{"x": 1e999}', '"\\ud800"', "\ufeff{}"]:
            with self.subTest(bad=bad):
                self.assertTrue(self.reason(bad).startswith("message value is not valid JSON: "))
        with self.assertRaises(InvalidInput):
            handle_value(b"{\xff}")
        self.assertEqual(
            self.reason("[" * 100000 + "]" * 100000),
            "message value is not valid JSON: recursion limit exceeded at line 1 column 128",
        )
        self.assertEqual(
            self.reason('{"x": "[[[", "y":\n' + "[" * 200),
            "message value is not valid JSON: recursion limit exceeded at line 2 column 127",
        )
        self.assertEqual(self.reason("[" * 127 + "]" * 127), prefix + "an array")

    def test_existing_result_is_replaced_and_other_fields_kept(self):
        self.assertEqual(
            run('{"x": 1, "y": 2, "result": "old", "note": "é\\u0001/", "n": [1.50, {"b": null, "a": true}]}'),
            '{"n":[1.5,{"a":true,"b":null}],"note":"é\\u0001/","result":2,"x":1,"y":2}',
        )

    def test_floats_are_written_as_serde_json_writes_them(self):
        cases = [
            (7.0, "7.0"), (0.25, "0.25"), (-0.0, "-0.0"), (1e15, "1000000000000000.0"),
            (1e16, "1e+16"), (1.5e300, "1.5e+300"), (1e-5, "0.00001"), (1.25e-5, "0.0000125"),
            (1e-6, "1e-6"), (123.456, "123.456"), (5e-324, "5e-324"),
        ]
        for x, text in cases:
            self.assertEqual(format_float(x), text)
        self.assertEqual(debug_float(1e-5), "1e-5")
        self.assertEqual(debug_float(1e308), "1e308")
        self.assertEqual(debug_float(2.0), "2.0")
        self.assertEqual(dumps({"é": 1, "z": 2, "a": [None]}), '{"a":[null],"z":2,"é":1}')
        # The json module's writer (fast) and the fallback agree with serde_json.
        fast = {"big": [1e16, 1.5e300, 7.0, 2**64 - 1, -(2**63)], "s": "\u2028\x7f\x01é", "t": True}
        text = '{"big":[1e+16,1.5e+300,7.0,18446744073709551615,-9223372036854775808],"s":"\u2028\x7f\\u0001é","t":true}'
        self.assertEqual(dumps(fast), text)
        self.assertEqual(_dumps(fast), text)
        self.assertEqual(dumps({"small": [1e-5, 2.5e-7, -0.0, 1e-4]}), '{"small":[0.00001,2.5e-7,-0.0,0.0001]}')


if __name__ == "__main__":
    unittest.main()
