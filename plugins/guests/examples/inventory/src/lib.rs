//! `inventory`: stock counts merge by summing deltas. For each count changed on both sides the
//! result is `server + (local − base)`, so two devices that took 2 and 5 items off the same
//! shelf both count; the answer is the same whichever reached the server first.
//!
//! It asks for check mode `record` (`Policy::check_mode`): in `fields` mode the server reports no
//! conflict when both sides set a count to the same value, and one of two equal deltas would be
//! lost.
//!
//! A count removed on one side and changed on the other, a non-count field changed differently
//! on both sides, or a deleted record needs the user.

use converge_plugin_sdk::*;

struct Inventory;

fn apply(fields: &mut Fields, patch: &Fields) {
    for (k, v) in patch {
        if v.is_null() {
            fields.remove(k);
        } else {
            fields.insert(k.clone(), v.clone());
        }
    }
}

/// A count, or 0 for a field that is not there.
fn count(value: Option<&Value>) -> Option<Value> {
    match value {
        None | Some(Value::Null) => Some(Value::from(0)),
        Some(v @ Value::Number(_)) => Some(v.clone()),
        Some(_) => None,
    }
}

/// `server + (local − base)`, exact for integers.
fn sum(base: &Value, local: &Value, server: &Value) -> Option<Value> {
    if let (Some(b), Some(l), Some(s)) = (base.as_i64(), local.as_i64(), server.as_i64()) {
        return s.checked_add(l.checked_sub(b)?).map(Value::from);
    }
    let v = server.as_f64()? + (local.as_f64()? - base.as_f64()?);
    Some(Value::from(v)).filter(|v| !v.is_null())
}

fn review(reason: String) -> Outcome {
    Outcome::NeedsReview { reason }
}

impl Policy for Inventory {
    fn describe() -> Description {
        Description { name: "inventory".into(), version: "1.0.0".into(), entities: vec!["items".into()] }
    }

    // Two equal edits of a count are two deltas: every concurrent change must reach the policy.
    fn check_mode() -> CheckMode {
        CheckMode::Record
    }

    fn resolve(input: Input) -> Outcome {
        if input.server_deleted {
            if input.local.is_empty() {
                return Outcome::TakeServer;
            }
            return review("the item was deleted on the server".into());
        }
        if input.local.is_empty() {
            return review("the item was deleted here but changed on the server".into());
        }
        let mut fields = input.server.clone();
        let mut summed = Vec::new();
        for (k, local) in &input.local {
            let (base, server) = (input.base.get(k), input.server.get(k));
            if base == server {
                // Only this side changed it.
                set(&mut fields, k, local);
                continue;
            }
            if local.is_null() || server.is_none_or(Value::is_null) {
                if server.is_none_or(Value::is_null) && local.is_null() {
                    continue;
                }
                return review(format!("{k} was removed on one side and changed on the other"));
            }
            if local.is_number() {
                let Some(value) = count(base).zip(count(server)).and_then(|(b, s)| sum(&b, local, &s)) else {
                    return review(format!("{k} changed on both sides and is not a count on both"));
                };
                fields.insert(k.clone(), value);
                summed.push(k.as_str());
            } else if server != Some(local) {
                return review(format!("{k} changed on both sides and is not a count"));
            }
        }
        if fields == input.server {
            return Outcome::TakeServer;
        }
        let mut with_local = input.server.clone();
        apply(&mut with_local, &input.local);
        if fields == with_local {
            return Outcome::TakeLocal;
        }
        Outcome::Merged { fields, notice: format!("counts merged: {}", summed.join(", ")) }
    }
}

fn set(fields: &mut Fields, k: &str, v: &Value) {
    if v.is_null() {
        fields.remove(k);
    } else {
        fields.insert(k.to_owned(), v.clone());
    }
}

export_policy!(Inventory);
