"""The `multiply` stage handler: the exports of the
``stagehost:handler/stage-handler`` world (wit/stage-handler.wit).

``{"operation": "mul", "operator_1": "6", "operator_2": "7"}`` becomes
``{"operation": "mul", "operator_1": "6", "operator_2": "7", "result": 42}``.
See multiply.py for the exact rules.

componentize-py looks for a class named ``WitWorld`` in this module. A
function returning ``result<T, E>`` returns T, or raises ``Err(E)``; any other
exception traps: the host dead-letters the message with the error kind
``trap`` and starts a fresh instance.
"""

import wit_world
from componentize_py_types import Err, Ok
from wit_world.imports import log, types

import multiply


class WitWorld(wit_world.WitWorld):
    def init(self, settings):
        """Called once per instance with the handler's settings; any are accepted."""
        if settings:
            names = ", ".join(name for name, _ in settings)
            log.log(log.Level.DEBUG, f"multiply ignores its settings: {names}")

    def handle(self, msg: types.Message):
        """One message in, one output (the input object plus "result") out."""
        try:
            value = multiply.handle_value(msg.value)
        except multiply.InvalidInput as err:
            raise Err(types.HandlerError_InvalidInput(str(err)))
        # key=None keeps the input key; topic=None sends to the stage's output.
        return [types.Output(value=value, key=None, headers=[], topic=None)]

    def handle_batch(self, msgs):
        """Several messages in one call, one result each, as `handle` gives them.

        `handle`'s body, inlined: a good message costs no method call and no
        raised exception, and the names it needs are looked up once a batch.
        """
        handle_value = multiply.handle_value
        invalid_input = multiply.InvalidInput
        output = types.Output
        results = []
        append = results.append
        for msg in msgs:
            try:
                value = handle_value(msg.value)
            except invalid_input as err:
                append(Err(types.HandlerError_InvalidInput(str(err))))
            else:
                # Output(value, key, headers, topic), as in `handle`.
                append(Ok([output(value, None, [], None)]))
        return results
