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


def run(store, key: str, value: str):
    return json.loads(running_total(store, key.encode(), value.encode()))


class RunningTotalTest(unittest.TestCase):
    def test_totals_add_up_per_account(self):
        store = DictStore()
        self.assertEqual(
            run(store, "alice", '{"amount": 5}'),
            {"account": "alice", "amount": 5, "total": 5, "count": 1},
        )
        run(store, "bob", '{"amount": 100}')
        self.assertEqual(
            run(store, "alice", '{"amount": -2}'),
            {"account": "alice", "amount": -2, "total": 3, "count": 2},
        )
        self.assertEqual(store[b"alice"], b'{"count":2,"total":3}')
        self.assertEqual(json.loads(store[b"bob"]), {"count": 1, "total": 100})

    def test_it_reads_state_the_rust_handler_wrote(self):
        store = DictStore({b"carol": b'{"count":10,"total":70}'})
        self.assertEqual(
            run(store, "carol", '{"amount": 1}'),
            {"account": "carol", "amount": 1, "total": 71, "count": 11},
        )

    def test_a_bad_amount_changes_nothing(self):
        store = DictStore()
        run(store, "dave", '{"amount": 1}')
        for value in ['{"amount": "x"}', '{"amount": 1.0}', '{"amount": true}', "{}",
                      "[1]", "not json", '{"amount": 9223372036854775808}']:
            with self.subTest(value=value), self.assertRaises(InvalidInput):
                run(store, "dave", value)
        with self.assertRaises(InvalidInput):
            running_total(store, b"dave", b"\xff")
        self.assertEqual(run(store, "dave", '{"amount": 1}')["total"], 2)

    def test_overflow_changes_nothing(self):
        store = DictStore()
        run(store, "erin", f'{{"amount": {I64_MAX}}}')
        with self.assertRaises(InvalidInput) as caught:
            run(store, "erin", '{"amount": 1}')
        self.assertEqual(str(caught.exception), "the total would overflow")
        self.assertEqual(run(store, "erin", '{"amount": -1}')["total"], I64_MAX - 1)


if __name__ == "__main__":
    unittest.main()
