//! Several `converge serve` nodes on one PostgreSQL database, as behind a load balancer: devices
//! that alternate nodes converge, concurrent pushes through both leave a feed every reader tails
//! exactly once, a node killed mid-push leaves nothing applied twice, and a push on one node
//! reaches the other node's subscribers.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use converge_core::hlc::Hlc;
use converge_core::model::{CheckMode, Op};
use converge_core::wire::{Mutation, PullRequest, PushBatch, PushRequest};
use converge_core::{StaticToken, SyncApi};
use converge_server::{PgOptions, PgServerStore, TenantStats};
use converge_test_support::{SplitMix64, obj};
use serde_json::json;
use uuid::Uuid;

use crate::{device, pg_server_on};

/// A tenant's figures read straight from the database.
async fn stats(url: &str, tenant: &str) -> TenantStats {
    let store = PgServerStore::connect(url, &PgOptions { pool_size: 1, ..PgOptions::default() }).await.unwrap();
    store.stats(tenant).await.unwrap()
}

/// A create of `notes/<id>`.
fn create(id: &str, fields: serde_json::Value) -> Mutation {
    Mutation {
        op_id: Uuid::now_v7(),
        entity: "notes".into(),
        record_id: id.into(),
        op: Op::Create,
        base_version: 0,
        patch: obj(fields),
        hlc: Hlc { millis: 1_764_064_800_000, counter: 0, device: "d1".into() },
        check: CheckMode::Fields,
    }
}

fn api(url: &str, token: &str) -> Arc<dyn SyncApi> {
    converge_connect::connect(url, Arc::new(StaticToken(token.to_owned()))).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn devices_that_alternate_nodes_at_random_converge() {
    let db = converge_test_support::pg::fresh_url();
    let nodes = [pg_server_on(&db), pg_server_on(&db)];
    let token = nodes[0].token("acme", "alice").unwrap();
    let urls = [nodes[0].url(), nodes[1].grpc_url(), nodes[1].url(), nodes[0].grpc_url()];
    let dir = tempfile::tempdir().unwrap();
    let mut rng = SplitMix64::new(0x6e6f_6465);
    for round in 0..8 {
        for d in 0..4 {
            // Each round a device opens its store against a node and wire picked at random.
            let url = &urls[rng.below(4) as usize];
            let dev = device(dir.path(), &format!("d{d}"), url, &token);
            for _ in 0..3 {
                let id = format!("r{}", rng.below(6));
                let field = format!("f{}", rng.below(3));
                dev.patch("notes", &id, obj(json!({ field: format!("{round}.{d}") })))
                    .or_else(|_| dev.put("notes", &id, obj(json!({"f0": format!("{round}.{d}")}))))
                    .unwrap();
            }
            dev.sync_once().await.unwrap();
        }
    }
    // Two more rounds with no writes: every device has pulled everything.
    for _ in 0..2 {
        for d in 0..4 {
            let dev = device(dir.path(), &format!("d{d}"), &urls[rng.below(4) as usize], &token);
            dev.sync_once().await.unwrap();
        }
    }
    let server = api(&urls[0], &token);
    let first = device(dir.path(), "d0", &urls[0], &token).list("notes").unwrap();
    assert!(!first.is_empty());
    for d in 1..4 {
        let other = device(dir.path(), &format!("d{d}"), &urls[1], &token).list("notes").unwrap();
        let view = |v: &[converge_core::RecordView]| -> Vec<(String, u64, converge_core::Fields)> {
            v.iter().map(|r| (r.record_id.clone(), r.version, r.fields.clone())).collect()
        };
        assert_eq!(view(&first), view(&other), "device d{d} differs from d0");
    }
    for r in &first {
        let on_server = server.record("notes", &r.record_id).await.unwrap();
        assert_eq!((on_server.version, &on_server.fields), (r.version, &r.fields));
    }
    let s = stats(&db, "acme").await;
    assert_eq!(s.version_sum, s.seq, "one feed position per applied change: {s:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_pushes_through_both_nodes_leave_a_feed_each_reader_sees_exactly_once() {
    const WRITERS: usize = 6;
    const BATCHES: usize = 25;
    const OPS: usize = 4;
    let db = converge_test_support::pg::fresh_url();
    let nodes = [pg_server_on(&db), pg_server_on(&db)];
    let token = nodes[0].token("acme", "alice").unwrap();
    let node_urls = [nodes[0].url(), nodes[1].url()];
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));

    // Readers tail the feed through each node while the writers push.
    let readers: Vec<_> = node_urls
        .iter()
        .map(|url| {
            let (api, done) = (api(url, &token), Arc::clone(&done));
            tokio::spawn(async move {
                let mut seen: HashMap<String, usize> = HashMap::new();
                let mut cursor = None;
                loop {
                    let finished = done.load(std::sync::atomic::Ordering::SeqCst);
                    let page = api.pull(PullRequest { cursor: cursor.clone(), limit: Some(7) }).await.unwrap();
                    for c in &page.changes {
                        *seen.entry(c.record_id.clone()).or_default() += 1;
                    }
                    cursor = Some(page.cursor);
                    if !page.has_more {
                        if finished {
                            return seen;
                        }
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                }
            })
        })
        .collect();
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let api = api(&node_urls[w % 2], &token);
            tokio::spawn(async move {
                for b in 0..BATCHES {
                    let mutations = (0..OPS).map(|i| create(&format!("w{w}-b{b}-{i}"), json!({"w": w}))).collect();
                    let req = PushRequest {
                        idempotency_key: Uuid::now_v7().to_string(),
                        batch: PushBatch { device_id: format!("dev{w}"), mutations },
                    };
                    let r = api.push(req).await.unwrap();
                    assert_eq!(r.accepted.len(), OPS);
                }
            })
        })
        .collect();
    for w in writers {
        w.await.unwrap();
    }
    done.store(true, std::sync::atomic::Ordering::SeqCst);
    let total = WRITERS * BATCHES * OPS;
    for (i, r) in readers.into_iter().enumerate() {
        let seen = r.await.unwrap();
        let repeats: Vec<_> = seen.iter().filter(|(_, n)| **n != 1).collect();
        assert!(repeats.is_empty(), "reader {i} saw changes more than once: {repeats:?}");
        assert_eq!(seen.len(), total, "reader {i} missed changes");
    }
    let s = stats(&db, "acme").await;
    assert_eq!((s.seq, s.version_sum, s.records), (total as u64, total as u64, total as u64));
}

/// A node dies right after committing a batch (its answer never sent) and, in the second case,
/// right before: the device finishes on the other node and every op is applied exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_killed_mid_push_leaves_the_client_to_finish_on_the_other_with_nothing_applied_twice() {
    for point in ["server.apply.after_commit:2", "server.apply.before_commit:2"] {
        let db = converge_test_support::pg::fresh_url();
        let mut dying =
            converge_test_support::ServerProcess::start_on(crate::bin(), &db, &[], &[("CONVERGE_CRASH_AT", point)])
                .unwrap();
        let other = pg_server_on(&db);
        let token = other.token("acme", "alice").unwrap();
        let dir = tempfile::tempdir().unwrap();
        {
            let dev = device(dir.path(), "d", &dying.url(), &token);
            for i in 0..120 {
                dev.put("notes", &format!("n{i:03}"), obj(json!({"i": i}))).unwrap();
            }
            let err = dev.sync_once().await.unwrap_err();
            assert_eq!(err.class(), converge_core::ErrorClass::Retryable, "{point}: a dead node: {err:?}");
        }
        let status = dying.wait_for_exit(Duration::from_secs(10)).unwrap();
        assert!(!status.success(), "{point}: the node died at its crash point");
        let dev = device(dir.path(), "d", &other.url(), &token);
        let report = dev.sync_once().await.unwrap();
        assert_eq!(dev.status().pending, 0, "{point}");
        // 50 were acknowledged before the crash; the rest now, the resent batch replayed if its
        // commit had happened.
        assert_eq!(report.accepted, 70, "{point}: {report:?}");
        let s = stats(&db, "acme").await;
        assert_eq!((s.seq, s.version_sum, s.records), (120, 120, 120), "{point}");
    }
}

/// kill -9 of a node at a random moment while a device pushes a large outbox through it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_killed_with_sigkill_under_load_leaves_nothing_applied_twice() {
    const NOTES: u64 = 3000;
    let db = converge_test_support::pg::fresh_url();
    let mut dying = pg_server_on(&db);
    let other = pg_server_on(&db);
    let token = other.token("acme", "alice").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let dev = device(dir.path(), "d", &dying.url(), &token);
    for i in 0..NOTES {
        dev.put("notes", &format!("n{i:05}"), obj(json!({"i": i}))).unwrap();
    }
    let syncing = tokio::spawn(async move {
        let result = dev.sync_once().await;
        (dev, result)
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    dying.kill().unwrap();
    let (dev, result) = syncing.await.unwrap();
    let left = dev.status().pending;
    drop(dev);
    assert!(result.is_err() && left > 0, "the node died mid-push ({left} left, {result:?})");
    let dev = device(dir.path(), "d", &other.url(), &token);
    dev.sync_once().await.unwrap();
    assert_eq!(dev.status().pending, 0);
    let s = stats(&db, "acme").await;
    assert_eq!((s.seq, s.version_sum, s.records), (NOTES, NOTES, NOTES), "{left} were left at the kill");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_on_one_node_reaches_subscribers_on_the_other() {
    let db = converge_test_support::pg::fresh_url();
    let nodes = [pg_server_on(&db), pg_server_on(&db)];
    let token = nodes[0].token("acme", "alice").unwrap();
    for url in [nodes[1].url(), nodes[1].grpc_url()] {
        let listener = api(&url, &token);
        let at = listener.pull(PullRequest { cursor: None, limit: None }).await.unwrap().cursor;
        let mut sub = listener.subscribe(Some(at)).await.unwrap();
        // Let the subscription settle, then push through the other node.
        tokio::time::sleep(Duration::from_millis(200)).await;
        let started = Instant::now();
        let pusher = api(&nodes[0].url(), &token);
        let req = PushRequest {
            idempotency_key: Uuid::now_v7().to_string(),
            batch: PushBatch {
                device_id: "d1".into(),
                mutations: vec![create(&format!("n-{}", Uuid::now_v7()), json!({}))],
            },
        };
        pusher.push(req).await.unwrap();
        let notice = tokio::time::timeout(Duration::from_secs(10), sub.next())
            .await
            .expect("a notice within 10 s")
            .expect("the stream is open")
            .unwrap();
        let page = listener.pull(PullRequest { cursor: None, limit: None }).await.unwrap();
        assert_eq!(notice.cursor, page.cursor, "the notice names the feed's end");
        eprintln!("notice across nodes over {url} after {:?}", started.elapsed());
    }
}
