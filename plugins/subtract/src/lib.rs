//! The `subtract` stage handler: subtracts a JSON message's second operand
//! from its first.
//!
//! `{"operation": "sub", "operator_1": "5", "operator_2": "2"}` becomes
//! `{"operation": "sub", "operator_1": "5", "operator_2": "2", "result": 3}`;
//! the short form `{"x": 5, "y": 2}` works too. See `calc` for the
//! exact rules.

stagehost_guest::json_handler!(calc::subtract);
