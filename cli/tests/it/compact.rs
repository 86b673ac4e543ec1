//! Compaction in a real `converge serve` (`--retention 1s --compact-every 1s`): an old tombstone
//! leaves the feed, a cursor that could miss it gets 410, devices recover, and expired
//! idempotency keys and op results run as new.

use std::time::{Duration, Instant};

use converge_test_support::{ServerProcess, converge};
use serde_json::{Value, json};

use crate::bin;
use crate::idempotency::{Answer, batch, get, mutation, push, uuid};

fn client(db: &str, url: &str, token: &str, args: &[&str]) -> Value {
    let mut all = vec!["client", "--db", db, "--server", url, "--token", token, "--json"];
    all.extend_from_slice(args);
    let out = converge(bin(), &all).unwrap();
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("not JSON ({e}): {out}"))
}

/// Asks again every 100 ms until `done` says yes, for at most 20 s.
async fn eventually<F: Future<Output = Answer>>(
    what: &str,
    mut ask: impl FnMut() -> F,
    done: impl Fn(&Answer) -> bool,
) -> Answer {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let answer = ask().await;
        if done(&answer) {
            return answer;
        }
        assert!(Instant::now() < deadline, "{what}: still {} {}", answer.status, answer.json());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn record_ids(answer: &Answer) -> Vec<String> {
    let changes = answer.json()["changes"].as_array().cloned().unwrap_or_default();
    changes.iter().map(|c| c["record_id"].as_str().unwrap_or("").to_owned()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_compacts_old_tombstones_and_expired_keys_in_the_background() {
    let srv = ServerProcess::start_with(bin(), &["--retention", "1s", "--compact-every", "1s"]).unwrap();
    let url = srv.url();
    let token = srv.token("t1", "u1").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (d1, d2) = (dir.path().join("d1.db"), dir.path().join("d2.db"));
    let (d1, d2) = (d1.to_str().unwrap(), d2.to_str().unwrap());

    // A batch whose key and op results will expire.
    let body = batch(vec![mutation(&uuid(), "dup", "create", 0, json!({"n": 1}))]);
    assert_eq!(push(&url, Some(&token), Some("key-1"), body.clone()).await.status, 200);
    // Two devices know two records; the second deletes one.
    client(d1, &url, &token, &["put", "notes", "keep", r#"{"title": "k"}"#]);
    client(d1, &url, &token, &["put", "notes", "gone", r#"{"title": "g"}"#]);
    client(d1, &url, &token, &["sync"]);
    client(d2, &url, &token, &["sync"]);
    assert_eq!(client(d2, &url, &token, &["list", "notes"]).as_array().unwrap().len(), 3);
    let cursor = get(&url, Some(&token), "/v1/sync/changes").await.json()["cursor"].as_str().unwrap().to_owned();
    assert_eq!(cursor, "c3");
    client(d2, &url, &token, &["delete", "notes", "gone"]);
    assert_eq!(client(d2, &url, &token, &["sync"])["report"]["accepted"], 1); // seq 4

    // Within a few runs of the background task, the tombstone is gone and a cursor from before
    // it expires.
    let path = format!("/v1/sync/changes?cursor={cursor}");
    let expired = eventually("the old cursor", || get(&url, Some(&token), &path), |a| a.status != 200).await;
    assert_eq!((expired.status, expired.code()), (410, "cursor_expired".to_owned()));
    let fresh = get(&url, Some(&token), "/v1/sync/changes").await;
    assert_eq!(fresh.status, 200);
    assert_eq!(record_ids(&fresh), ["dup", "keep"]);
    let end = fresh.json()["cursor"].as_str().unwrap().to_owned();
    assert_eq!(end, "c4.4");
    let next = get(&url, Some(&token), &format!("/v1/sync/changes?cursor={end}")).await;
    assert_eq!((next.status, record_ids(&next).len()), (200, 0));
    assert_eq!(get(&url, Some(&token), "/v1/records/notes/gone").await.status, 404);
    assert_eq!(get(&url, Some(&token), "/v1/records/notes/keep").await.status, 200);

    // The device with the old cursor re-syncs from the start and lands past the horizon: its next
    // sync pulls nothing instead of expiring again.
    let resync = client(d1, &url, &token, &["sync"]);
    assert_eq!(resync["report"]["pulled"], 2, "{resync}");
    let quiet = client(d1, &url, &token, &["sync"]);
    assert_eq!(quiet["report"]["pulled"], 0, "{quiet}");
    assert_eq!(client(d2, &url, &token, &["sync"])["report"]["pulled"], 0);
    assert_eq!(client(d1, &url, &token, &["get", "notes", "keep"])["fields"]["title"], "k");

    // The expired key runs the batch again as new: its create now meets the record.
    let rerun = eventually(
        "the expired key",
        || push(&url, Some(&token), Some("key-1"), body.clone()),
        |a| a.headers.get("idempotent-replayed").is_none(),
    )
    .await;
    assert_eq!(rerun.status, 200);
    let rerun = rerun.json();
    assert_eq!((rerun["accepted"].as_array().unwrap().len(), rerun["conflicts"].as_array().unwrap().len()), (0, 1));
}
