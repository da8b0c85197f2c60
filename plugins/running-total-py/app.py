"""The ``running-total-py`` stage handler: the exports of the
``stagehost:handler/stage-handler`` world (wit/stage-handler.wit), in Python.

A running total per account (the value's ``account`` field, a non-empty
string), kept in the stage's state under the account's UTF-8 bytes through the
world's ``state`` import (``from wit_world.imports import state``); see
running_total.py for the rules. The stage needs ``state: {}`` in the config,
and keyed messages (key them by account, so that one account's messages stay
in one partition, in order); the key is checked for, and kept on the output,
but the logic does not read it.

componentize-py looks for a class named ``WitWorld`` in this module. A
function returning ``result<T, E>`` returns T, or raises ``Err(E)``; any other
exception traps: the host dead-letters the message with the error kind
``trap``, keeps none of its state changes, and starts a fresh instance.
"""

import wit_world
from componentize_py_types import Err, Ok
from wit_world.imports import log, state, types

import running_total


class HostState:
    """The seam between the logic and the host: the ``state`` import."""

    @staticmethod
    def get(key: bytes):
        return state.get(key)

    @staticmethod
    def set(key: bytes, value: bytes):
        state.set(key, value, None)  # None: no time to live


class WitWorld(wit_world.WitWorld):
    def init(self, settings):
        """Called once per instance with the handler's settings; any are accepted."""
        if settings:
            names = ", ".join(name for name, _ in settings)
            log.log(log.Level.DEBUG, f"running-total-py ignores its settings: {names}")

    def handle(self, msg: types.Message):
        """One keyed amount in, one output with the account's new total out."""
        if msg.key is None:
            raise Err(types.HandlerError_InvalidInput("a running total needs a keyed message"))
        try:
            value = running_total.running_total(HostState, msg.value)
        except running_total.InvalidInput as err:
            raise Err(types.HandlerError_InvalidInput(str(err)))
        # key=None keeps the input key; topic=None sends to the stage's output.
        return [types.Output(value=value, key=None, headers=[], topic=None)]

    def handle_batch(self, msgs):
        """One result per message, as `handle` gives them (the host calls
        `handle` for a stage with state, so that each message's changes are
        its own)."""
        results = []
        for msg in msgs:
            try:
                results.append(Ok(self.handle(msg)))
            except Err as err:
                results.append(err)
        return results
