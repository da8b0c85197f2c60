//! The `running-total` stage handler: a running total per account, kept in
//! the stage's state under the account.
//!
//! `{"account": "alice", "amount": 5}` (keyed `alice`) becomes
//! `{"account": "alice", "amount": 5, "total": 12, "count": 3}` when alice's
//! earlier amounts summed to 7 over two messages. A missing account, an
//! amount that is not an integer, or a total that would overflow i64 is
//! `invalid-input` and changes nothing. The stage needs `state:` in the
//! config, and its input keyed by the account (so that each account's
//! messages share a partition, and so its state).

use stagehost_guest::{
    Guest, HandlerError, Message, Output, Settings, Value, export_handler, json, state,
};

/// What the state holds per account.
fn totals(key: &[u8]) -> (i64, u64) {
    let saved = state::get_json(key).unwrap_or(Value::Null);
    (
        saved["total"].as_i64().unwrap_or(0),
        saved["count"].as_u64().unwrap_or(0),
    )
}

/// Adds one message's amount to its account's total.
pub fn running_total(input: &Value) -> Result<Value, HandlerError> {
    let account = input["account"]
        .as_str()
        .filter(|account| !account.is_empty())
        .ok_or_else(|| HandlerError::invalid_input("\"account\" must be a non-empty string"))?;
    let key = account.as_bytes();
    let amount = input["amount"]
        .as_i64()
        .ok_or_else(|| HandlerError::invalid_input("\"amount\" must be an integer"))?;
    let (total, count) = totals(key);
    let total = total
        .checked_add(amount)
        .ok_or_else(|| HandlerError::invalid_input("the total would overflow"))?;
    let count = count + 1;
    state::set_json(key, &json!({"total": total, "count": count}));
    Ok(json!({
        "account": account,
        "amount": amount,
        "total": total,
        "count": count,
    }))
}

struct RunningTotal;

impl Guest for RunningTotal {
    fn init(_settings: Settings) -> Result<(), String> {
        Ok(())
    }

    fn handle(msg: Message) -> Result<Vec<Output>, HandlerError> {
        let output = running_total(&msg.json()?)?;
        Ok(vec![Output::json(&output)])
    }
}

export_handler!(RunningTotal);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn totals_add_up_per_account() {
        running_total(&json!({"account": "alice", "amount": 5})).unwrap();
        running_total(&json!({"account": "bob", "amount": 100})).unwrap();
        let out = running_total(&json!({"account": "alice", "amount": -2})).unwrap();
        assert_eq!(
            out,
            json!({"account": "alice", "amount": -2, "total": 3, "count": 2})
        );
    }

    #[test]
    fn a_bad_amount_changes_nothing() {
        running_total(&json!({"account": "carol", "amount": 1})).unwrap();
        assert!(running_total(&json!({"account": "carol", "amount": "x"})).is_err());
        assert!(running_total(&json!({"amount": 1})).is_err());
        running_total(&json!({"account": "carol", "amount": i64::MAX})).unwrap_err();
        let out = running_total(&json!({"account": "carol", "amount": 1})).unwrap();
        assert_eq!(out["total"], 2);
    }
}
