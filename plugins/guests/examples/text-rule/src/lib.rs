//! `text_rule`: two text rules for notes-like records.
//!
//! - `tags` (an array of strings) merges as a set: a tag added on either side is kept, a tag
//!   removed on either side is gone; the result is sorted, so it does not depend on which side
//!   reached the server first.
//! - `notes` (a string) keeps both appends: when both sides only appended to the base text,
//!   the result is the base followed by both appended parts (in text order, again so the order
//!   of arrival does not matter).
//!
//! Any other field changed differently on both sides, a `tags` or `notes` change that is not of
//! that shape (notes edited in the middle, tags not an array of strings), or a deleted record
//! needs the user.

use std::collections::BTreeSet;

use converge_plugin_sdk::*;

struct TextRule;

fn tags(value: Option<&Value>) -> Option<BTreeSet<&str>> {
    match value {
        None | Some(Value::Null) => Some(BTreeSet::new()),
        Some(Value::Array(items)) => items.iter().map(Value::as_str).collect(),
        Some(_) => None,
    }
}

/// A tag is kept if both sides have it, or one side added it.
fn merge_tags(base: Option<&Value>, local: Option<&Value>, server: Option<&Value>) -> Option<Value> {
    let (b, l, s) = (tags(base)?, tags(local)?, tags(server)?);
    let merged: Vec<Value> = l
        .union(&s)
        .filter(|t| (l.contains(*t) && s.contains(*t)) || !b.contains(*t))
        .map(|t| Value::from(*t))
        .collect();
    Some(Value::Array(merged))
}

/// Both appends kept, in text order.
fn merge_notes(base: Option<&Value>, local: Option<&Value>, server: Option<&Value>) -> Option<Value> {
    let base = match base {
        None | Some(Value::Null) => "",
        Some(v) => v.as_str()?,
    };
    let local = local?.as_str()?.strip_prefix(base)?;
    let server = server?.as_str()?.strip_prefix(base)?;
    let (first, second) = if local <= server { (local, server) } else { (server, local) };
    Some(Value::String(format!("{base}{first}{second}")))
}

fn review(reason: String) -> Outcome {
    Outcome::NeedsReview { reason }
}

impl Policy for TextRule {
    fn describe() -> Description {
        Description { name: "text_rule".into(), version: "1.0.0".into(), entities: vec!["notes".into()] }
    }

    fn resolve(input: Input) -> Outcome {
        if input.server_deleted {
            if input.local.is_empty() {
                return Outcome::TakeServer;
            }
            return review("the note was deleted on the server".into());
        }
        if input.local.is_empty() {
            return review("the note was deleted here but changed on the server".into());
        }
        let mut fields = input.server.clone();
        let mut merged = Vec::new();
        for (k, local) in &input.local {
            let (base, server) = (input.base.get(k), input.server.get(k));
            let value = if base == server || server == Some(local) {
                local.clone()
            } else {
                let rule = match k.as_str() {
                    "tags" => merge_tags(base, Some(local), server),
                    "notes" => merge_notes(base, Some(local), server),
                    _ => return review(format!("{k} changed on both sides")),
                };
                let Some(value) = rule else {
                    return review(format!("{k} changed on both sides in a way its rule does not merge"));
                };
                merged.push(k.as_str());
                value
            };
            if value.is_null() {
                fields.remove(k);
            } else {
                fields.insert(k.clone(), value);
            }
        }
        if fields == input.server {
            return Outcome::TakeServer;
        }
        if merged.is_empty() {
            return Outcome::TakeLocal;
        }
        Outcome::Merged { fields, notice: format!("merged update: {}", merged.join(", ")) }
    }
}

export_policy!(TextRule);
