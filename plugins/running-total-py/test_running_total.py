"""Unit tests of the running-total logic on the local Python
(``python3 -m unittest``), with a dict for the host's state; the component
itself runs through the host in host/tests/stateful_polyglot.rs."""

import json
import unittest

from running_total import I64_MAX, InvalidInput, running_total


class DictStore(dict):
    """A store as the logic sees the host's state: get and set."""

    def set(self, key, value):
        self[key] = value


def run(store, value: str):
    return json.loads(running_total(store, value.encode()))


def amount(account: str, amount) -> str:
    """``{"account": account, "amount": amount}`` as JSON text."""
    return json.dumps({"account": account, "amount": amount})


class RunningTotalTest(unittest.TestCase):
    def test_totals_add_up_per_account(self):
        store = DictStore()
        self.assertEqual(
            run(store, '{"account": "alice", "amount": 5}'),
            {"account": "alice", "amount": 5, "total": 5, "count": 1},
        )
        run(store, amount("bob", 100))
        self.assertEqual(
            run(store, '{"amount": -2, "account": "alice", "note": "x"}'),
            {"account": "alice", "amount": -2, "total": 3, "count": 2},
        )
        self.assertEqual(store[b"alice"], b'{"count":2,"total":3}')
        self.assertEqual(json.loads(store[b"bob"]), {"count": 1, "total": 100})
        self.assertEqual(set(store), {b"alice", b"bob"})

    def test_the_state_key_is_the_accounts_utf8(self):
        store = DictStore()
        # An escaped and a literal "ë" are the same account.
        run(store, '{"account": "zo\\u00eb", "amount": 2}')
        self.assertEqual(
            run(store, '{"account": "zoë", "amount": 3}'),
            {"account": "zoë", "amount": 3, "total": 5, "count": 2},
        )
        self.assertEqual(list(store), ["zoë".encode("utf-8")])
        self.assertEqual(running_total(store, amount("zoë", 0).encode()).decode("utf-8"),
                         '{"account":"zoë","amount":0,"total":5,"count":3}')

    def test_it_reads_state_the_rust_handler_wrote(self):
        store = DictStore({b"carol": b'{"count":10,"total":70}'})
        self.assertEqual(
            run(store, amount("carol", 1)),
            {"account": "carol", "amount": 1, "total": 71, "count": 11},
        )

    def test_a_missing_or_bad_account_changes_nothing(self):
        store = DictStore()
        run(store, amount("dave", 1))
        for value in ['{"amount": 1}', '{"account": "", "amount": 1}',
                      '{"account": null, "amount": 1}', '{"account": 7, "amount": 1}',
                      '{"account": true, "amount": 1}', '{"account": ["dave"], "amount": 1}',
                      '{"account": {"id": "dave"}, "amount": 1}', "[1]", '"dave"', "{}"]:
            with self.subTest(value=value), self.assertRaises(InvalidInput) as caught:
                run(store, value)
            self.assertEqual(str(caught.exception), '"account" must be a non-empty string')
        with self.assertRaises(InvalidInput):
            run(store, '{"account": "\\ud800", "amount": 1}')
        self.assertEqual(store, {b"dave": b'{"count":1,"total":1}'})
        self.assertEqual(run(store, amount("dave", 1))["total"], 2)

    def test_a_bad_amount_changes_nothing(self):
        store = DictStore()
        run(store, amount("dave", 1))
        for value in ['"x"', "1.0", "true", "null", "[1]", "9223372036854775808"]:
            with self.subTest(value=value), self.assertRaises(InvalidInput) as caught:
                run(store, f'{{"account": "dave", "amount": {value}}}')
            self.assertEqual(str(caught.exception), '"amount" must be an integer')
        for value in ['{"account": "dave"}', "not json"]:
            with self.subTest(value=value), self.assertRaises(InvalidInput):
                run(store, value)
        with self.assertRaises(InvalidInput):
            running_total(store, b"\xff")
        self.assertEqual(run(store, amount("dave", 1))["total"], 2)

    def test_overflow_changes_nothing(self):
        store = DictStore()
        run(store, amount("erin", I64_MAX))
        with self.assertRaises(InvalidInput) as caught:
            run(store, amount("erin", 1))
        self.assertEqual(str(caught.exception), "the total would overflow")
        self.assertEqual(run(store, amount("erin", -1))["total"], I64_MAX - 1)


if __name__ == "__main__":
    unittest.main()
