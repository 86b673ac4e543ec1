//! The checks at quiescence: views equal the server, the feed has no gap or repeat, nothing was
//! applied twice, and every write is in the final state, superseded, or kept in a journal.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use converge_core::SyncApi;
use converge_server::SqliteServerStore;
use serde_json::{Value, json};

use crate::run::{View, full_feed};

pub(crate) async fn at_quiescence(v: &mut View<'_>, api: &Arc<dyn SyncApi>, store: &SqliteServerStore) {
    let feed = match full_feed(api).await {
        Ok(f) => f,
        Err(e) => {
            v.failures.push(format!("reading the final feed failed: {e}"));
            return;
        }
    };
    let verbose = std::env::var_os("CONVERGE_SIM_TRACE").is_some();
    for ch in &feed {
        let e = format!(
            "final {}/{} v{} {} {}",
            ch.entity,
            ch.record_id,
            ch.version,
            ch.deleted,
            Value::Object(ch.fields.clone())
        );
        if verbose {
            eprintln!("{e}");
        }
        v.trace.add(&e);
    }
    if verbose {
        for d in v.devices {
            for c in
                d.engine().journal().unwrap_or_default().into_iter().chain(d.engine().conflicts().unwrap_or_default())
            {
                eprintln!(
                    "journal {} {}/{} {} local={} losing={} server={}",
                    d.name,
                    c.entity,
                    c.record_id,
                    c.outcome,
                    Value::Object(c.local.clone()),
                    Value::Object(c.losing.clone()),
                    Value::Object(c.server.clone())
                );
            }
        }
    }

    // The feed: every record once; one sequence number per applied change.
    let mut seen = HashSet::new();
    for ch in &feed {
        if !seen.insert((ch.entity.clone(), ch.record_id.clone())) {
            v.failures.push(format!("{}/{} appears twice in the feed", ch.entity, ch.record_id));
        }
    }
    match store.stats("sim") {
        Ok(stats) => {
            if stats.version_sum != stats.seq {
                v.failures.push(format!(
                    "versions add up to {} but the change sequence is {}: a change was lost or applied twice",
                    stats.version_sum, stats.seq
                ));
            }
            if stats.records != feed.len() as u64 {
                v.failures.push(format!("the server holds {} records but the feed has {}", stats.records, feed.len()));
            }
        }
        Err(e) => v.failures.push(format!("server stats failed: {e}")),
    }

    // Every device's view equals the server's.
    let server: BTreeMap<(String, String), &converge_core::Change> =
        feed.iter().map(|c| ((c.entity.clone(), c.record_id.clone()), c)).collect();
    for d in v.devices {
        let e = d.engine();
        let status = e.status();
        let held = status.needs_action + status.dead_letters;
        if status.pending != 0 || held != 0 {
            v.failures.push(format!("{} still has {} pending and {} failed ops", d.name, status.pending, held));
        }
        for ((entity, id), ch) in &server {
            let local = e.get(entity, id).ok().flatten();
            let same = match &local {
                None => ch.deleted,
                Some(r) => r.deleted == ch.deleted && r.fields == ch.fields && r.version == ch.version,
            };
            if !same {
                v.failures.push(format!(
                    "{} sees {entity}/{id} as {:?}, the server has v{} deleted={} {}",
                    d.name,
                    local.map(|r| (r.version, r.deleted, Value::Object(r.fields))),
                    ch.version,
                    ch.deleted,
                    Value::Object(ch.fields.clone())
                ));
            }
        }
        for (entity, _) in crate::world::ENTITIES {
            for r in e.list(entity).unwrap_or_default() {
                if !server.contains_key(&(entity.to_owned(), r.record_id.clone())) {
                    v.failures.push(format!("{} holds {entity}/{} that the server never got", d.name, r.record_id));
                }
            }
        }
    }

    // Nothing a user wrote disappears silently.
    let mut kept: HashSet<(String, String, String, String)> = HashSet::new();
    for d in v.devices {
        let e = d.engine();
        for c in e.journal().unwrap_or_default().into_iter().chain(e.conflicts().unwrap_or_default()) {
            for (k, val) in c.local.iter().chain(c.losing.iter()) {
                kept.insert((c.entity.clone(), c.record_id.clone(), k.clone(), val.to_string()));
                for line in val.as_str().unwrap_or_default().lines() {
                    kept.insert((
                        c.entity.clone(),
                        c.record_id.clone(),
                        k.clone(),
                        json!({ "line": line }).to_string(),
                    ));
                }
            }
        }
    }
    for w in v.writes {
        let (step, entity, id, field, value) = (&w.step, &w.entity, &w.id, &w.field, &w.value);
        let holds = |current: Option<&Value>| match (value.get("line").and_then(Value::as_str), current) {
            (Some(line), Some(text)) => text.as_str().is_some_and(|t| t.lines().any(|l| l == line)),
            (_, current) => current == Some(value),
        };
        let in_final = server
            .get(&((*entity).to_owned(), id.clone()))
            .is_some_and(|ch| !ch.deleted && holds(ch.fields.get(field)));
        let superseded = v.writes.iter().any(|o| {
            o.entity == *entity
                && o.id == *id
                && o.field == *field
                && (o.step > *step || (*entity == "flags" && (o.step, &o.value) != (*step, value)))
        }) || v.deletes.iter().any(|(s, e2, id2)| e2 == entity && id2 == id && s >= step);
        let journaled = kept.contains(&((*entity).to_owned(), id.clone(), field.clone(), value.to_string()));
        if !(in_final || superseded || journaled) {
            v.failures.push(format!(
                "the write of step {step} to {entity}/{id}.{field} is neither in the final state, nor overwritten later, nor in a journal"
            ));
        }
    }
}
