//! Many writers on one tenant: the feed from the start holds every record exactly once, and the
//! sum of record versions equals the tenant's change sequence (no lost or doubled change).

use std::collections::HashMap;

use converge_core::model::{CheckMode, Op};
use converge_core::wire::PullRequest;
use serde_json::json;

use crate::support::*;

const TASKS: usize = 8;
const BATCHES: usize = 50;

async fn eight_writers_fifty_batches_each_leave_a_gapless_feed(backend: Backend) {
    let server = Server::new(backend).await;
    let setup = server.api("acme", "setup");
    push(&setup, vec![create("hot", json!({"n": 0}))]).await;

    let mut tasks = Vec::new();
    for t in 0..TASKS {
        let api = server.api("acme", &format!("user{t}"));
        tasks.push(tokio::spawn(async move {
            let mine = format!("own-{t}");
            let mut own_version = 0;
            let mut applied = 0;
            for b in 0..BATCHES {
                let mut ms = vec![create(&format!("new-{t}-{b}"), json!({"t": t, "b": b}))];
                if b == 0 {
                    ms.push(create(&mine, json!({"b": b})));
                } else {
                    ms.push(update(&mine, own_version, json!({"b": b})));
                }
                // Every writer also races on one hot record; lww never conflicts.
                let ms_at = (b * TASKS + t) as u64;
                ms.push(mutation(Op::Update, "hot", 1, json!({"n": ms_at, format!("w{t}"): b}), CheckMode::Lww, ms_at));
                let r = push(&api, ms).await;
                assert!(r.conflicts.is_empty() && r.rejected.is_empty(), "{r:?}");
                own_version = r.accepted[1].version;
                applied += r.accepted.len();
            }
            applied
        }));
    }
    let mut accepted = 0;
    for task in tasks {
        accepted += task.await.unwrap();
    }
    assert_eq!(accepted, TASKS * BATCHES * 3);

    // Read the whole feed in pages.
    let mut cursor = None;
    let mut seen: HashMap<String, u64> = HashMap::new();
    loop {
        let page = setup.pull(PullRequest { cursor: cursor.clone(), limit: Some(97) }).await.unwrap();
        for c in &page.changes {
            assert!(seen.insert(c.record_id.clone(), c.version).is_none(), "{} twice", c.record_id);
        }
        cursor = Some(page.cursor);
        if !page.has_more {
            break;
        }
    }
    let stats = server.stats("acme").await;
    assert_eq!(seen.len(), 1 + TASKS + TASKS * BATCHES);
    assert_eq!(seen.len() as u64, stats.records);
    for t in 0..TASKS {
        assert_eq!(seen[&format!("own-{t}")], BATCHES as u64);
    }
    let sum: u64 = seen.values().sum();
    assert_eq!(sum, stats.version_sum);
    assert_eq!(stats.version_sum, stats.seq);
    assert_eq!(cursor, Some(format!("c{}", stats.seq)));
    // The hot record holds the latest write of every writer.
    let hot = fields(&setup, "hot").await;
    assert_eq!(hot["n"], json!((BATCHES * TASKS - 1) as u64));
    for t in 0..TASKS {
        assert_eq!(hot[format!("w{t}")], json!(BATCHES - 1));
    }
}

on_every_backend!(eight_writers_fifty_batches_each_leave_a_gapless_feed,);
