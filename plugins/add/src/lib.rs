//! The `add` stage handler: adds a JSON message's two operands.
//!
//! `{"operation": "sum", "operator_1": "5", "operator_2": "2"}` becomes
//! `{"operation": "sum", "operator_1": "5", "operator_2": "2", "result": 7}`;
//! the short form `{"x": 5, "y": 2}` works too. See `calc` for the
//! exact rules.

stagehost_guest::json_handler!(calc::add);
