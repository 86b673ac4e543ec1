//! `order_status`: an order's `status` only moves forward through
//! `draft → placed → paid → shipped → delivered`, and `cancelled` is allowed from `draft` or
//! `placed`. When both sides moved it forward along that line, the later state wins (one
//! device marked it paid, the other shipped: shipped). Anything else — a move backwards, an
//! unknown state, cancelled on one side and moved on along the line on the other, another field
//! changed differently on both sides, a deleted order — needs the user.

use converge_plugin_sdk::*;

struct OrderStatus;

const LINE: [&str; 5] = ["draft", "placed", "paid", "shipped", "delivered"];
const CANCELLED: &str = "cancelled";

/// The position on the line; `None` for `cancelled`; an error for an unknown state.
fn rank(state: &str) -> Result<Option<usize>, String> {
    if state == CANCELLED {
        return Ok(None);
    }
    LINE.iter().position(|s| *s == state).map(Some).ok_or_else(|| format!("unknown status {state:?}"))
}

/// Whether `to` is a forward move from `from` (`None`: the order had no status yet).
fn forward(from: Option<&str>, to: &str) -> Result<bool, String> {
    let from_rank = match from {
        None => return rank(to).map(|_| true),
        Some(f) => rank(f)?,
    };
    Ok(match (from_rank, rank(to)?) {
        (Some(f), Some(t)) => t > f,
        (Some(f), None) => f <= 1,
        (None, _) => false,
    })
}

fn status(fields: &Fields) -> Result<Option<&str>, String> {
    match fields.get("status") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err("status is not a string".into()),
    }
}

/// The status when both sides changed it.
fn settle(base: Option<&str>, local: &str, server: &str) -> Result<String, String> {
    if !forward(base, local)? || !forward(base, server)? {
        return Err(format!(
            "status moved from {} to {local} here and to {server} on the server; an order only moves forward",
            base.unwrap_or("nothing")
        ));
    }
    match (rank(local)?, rank(server)?) {
        (Some(l), Some(s)) => Ok(LINE[l.max(s)].to_owned()),
        _ => Err(format!("status is {local} here and {server} on the server")),
    }
}

fn review(reason: String) -> Outcome {
    Outcome::NeedsReview { reason }
}

impl Policy for OrderStatus {
    fn describe() -> Description {
        Description { name: "order_status".into(), version: "1.0.0".into(), entities: vec!["orders".into()] }
    }

    fn resolve(input: Input) -> Outcome {
        if input.server_deleted {
            if input.local.is_empty() {
                return Outcome::TakeServer;
            }
            return review("the order was deleted on the server".into());
        }
        if input.local.is_empty() {
            return review("the order was deleted here but changed on the server".into());
        }
        let mut fields = input.server.clone();
        let mut notice = None;
        for (k, local) in &input.local {
            let (base, server) = (input.base.get(k), input.server.get(k));
            let settled = if base == server || server == Some(local) {
                local.clone()
            } else if k == "status" {
                let both = (status(&input.base), status(&input.local), status(&input.server));
                let (Ok(b), Ok(Some(l)), Ok(Some(s))) = both else {
                    return review("status was removed or is not a string".into());
                };
                match settle(b, l, s) {
                    Ok(state) => {
                        notice = Some(format!("status: {state} (the later state)"));
                        Value::String(state)
                    }
                    Err(reason) => return review(reason),
                }
            } else {
                return review(format!("{k} changed on both sides"));
            };
            if settled.is_null() {
                fields.remove(k);
            } else {
                fields.insert(k.clone(), settled);
            }
        }
        if fields == input.server {
            return Outcome::TakeServer;
        }
        match notice {
            Some(notice) if fields.get("status") != input.local.get("status") => Outcome::Merged { fields, notice },
            _ => Outcome::TakeLocal,
        }
    }
}

export_policy!(OrderStatus);
