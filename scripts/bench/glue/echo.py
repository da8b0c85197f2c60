"""The least a Python handler can do: each message's value back as its one
output. Built by scripts/bench/guest-glue.sh to measure what componentize-py
costs per message before any handler code runs."""

import wit_world
from componentize_py_types import Ok
from wit_world.imports import types


class WitWorld(wit_world.WitWorld):
    def init(self, settings):
        pass

    def handle(self, msg):
        return [types.Output(msg.value, None, [], None)]

    def handle_batch(self, msgs):
        output = types.Output
        return [Ok([output(msg.value, None, [], None)]) for msg in msgs]
