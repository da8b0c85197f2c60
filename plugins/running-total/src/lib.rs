//! The `running-total` stage handler: a running total per account, kept in
//! the stage's state under the message key.
//!
//! `{"amount": 5}` keyed `alice` becomes
//! `{"account": "alice", "amount": 5, "total": 12, "count": 3}` when alice's
//! earlier amounts summed to 7 over two messages. An amount that is not an
//! integer, or a total that would overflow, is `invalid-input` and changes
//! nothing. The stage needs `state:` in the config and keyed messages.

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
pub fn running_total(key: &[u8], input: &Value) -> Result<Value, HandlerError> {
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
        "account": String::from_utf8_lossy(key),
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
        let key = msg
            .key
            .clone()
            .ok_or_else(|| HandlerError::invalid_input("a running total needs a keyed message"))?;
        let output = running_total(&key, &msg.json()?)?;
        Ok(vec![Output::json(&output)])
    }
}

export_handler!(RunningTotal);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn totals_add_up_per_account() {
        running_total(b"alice", &json!({"amount": 5})).unwrap();
        running_total(b"bob", &json!({"amount": 100})).unwrap();
        let out = running_total(b"alice", &json!({"amount": -2})).unwrap();
        assert_eq!(
            out,
            json!({"account": "alice", "amount": -2, "total": 3, "count": 2})
        );
    }

    #[test]
    fn a_bad_amount_changes_nothing() {
        running_total(b"carol", &json!({"amount": 1})).unwrap();
        assert!(running_total(b"carol", &json!({"amount": "x"})).is_err());
        let out = running_total(b"carol", &json!({"amount": 1})).unwrap();
        assert_eq!(out["total"], 2);
    }
}
