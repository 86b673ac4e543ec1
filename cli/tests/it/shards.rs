//! Tenants on two PostgreSQL shards behind one node: each tenant lives wholly on one shard, never
//! sees another's rows, `converge shards` tells where, and a restart (with the shards given in
//! another order) keeps the map.

use std::collections::{BTreeMap, BTreeSet};

use converge_server::{PgOptions, PgServerStore};
use converge_test_support::converge;
use serde_json::json;

use crate::idempotency::{batch, get, mutation, push, uuid};
use crate::{bin, pg_server_on};

const TENANTS: usize = 20;

/// Which shard id `converge shards` says each tenant is on, and whether it holds rows yet.
fn placements(a: &str, b: &str, tenants: &[String]) -> BTreeMap<String, (String, bool)> {
    let mut args = vec!["shards", "--db", a, "--db", b];
    for t in tenants {
        args.extend(["--tenant", t.as_str()]);
    }
    let out = converge(bin(), &args).unwrap();
    assert!(!out.contains(":converge@"), "no password is shown: {out}");
    let mut found = BTreeMap::new();
    for line in out.lines().filter(|l| l.starts_with("tenant ")) {
        let (tenant, rest) = line["tenant ".len()..].split_once(": ").unwrap();
        let holds = !rest.starts_with("no rows yet");
        let shard = rest.split("shard ").nth(1).unwrap().split_whitespace().next().unwrap();
        found.insert(tenant.to_owned(), (shard.to_owned(), holds));
    }
    assert_eq!(found.len(), tenants.len(), "{out}");
    found
}

async fn feed_ids(url: &str, token: &str) -> Vec<String> {
    let answer = get(url, Some(token), "/v1/sync/changes").await;
    assert_eq!(answer.status, 200, "{}", String::from_utf8_lossy(&answer.body));
    answer.json()["changes"].as_array().unwrap().iter().map(|c| c["record_id"].as_str().unwrap().to_owned()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenants_on_two_shards_never_see_each_other_and_a_restart_keeps_the_map() {
    let (a, b) = (converge_test_support::pg::fresh_url(), converge_test_support::pg::fresh_url());
    let tenants: Vec<String> = (0..TENANTS).map(|t| format!("tenant{t:02}")).collect();
    let mut node = pg_server_on(&format!("{a} {b}"));
    let before = placements(&a, &b, &tenants);
    assert!(before.values().all(|(_, holds)| !holds), "no tenant has rows yet");

    for t in &tenants {
        let token = node.token(t, "u").unwrap();
        let answer = push(
            &node.url(),
            Some(&token),
            Some(&uuid()),
            batch(vec![mutation(&uuid(), t, "create", 0, json!({"of": t}))]),
        )
        .await;
        assert_eq!(answer.status, 200, "{}", String::from_utf8_lossy(&answer.body));
    }
    let placed = placements(&a, &b, &tenants);
    assert!(placed.values().all(|(_, holds)| *holds));
    let by_shard: BTreeMap<&str, BTreeSet<&str>> = placed.iter().fold(BTreeMap::new(), |mut m, (t, (s, _))| {
        m.entry(s.as_str()).or_default().insert(t.as_str());
        m
    });
    assert_eq!(by_shard.len(), 2, "tenants are spread over both shards: {by_shard:?}");
    for (t, (shard, _)) in &placed {
        assert_eq!(&before[t].0, shard, "the first push went where the map said it would");
    }
    // Each shard's database holds exactly the tenants the map puts there.
    for url in [&a, &b] {
        let store = PgServerStore::connect(url, &PgOptions { pool_size: 1, ..PgOptions::default() }).await.unwrap();
        let id = store.shard_id().await.unwrap().to_string();
        let held: BTreeSet<String> = store.tenants().await.unwrap().into_iter().collect();
        let expected: BTreeSet<String> = by_shard[id.as_str()].iter().map(|t| t.to_string()).collect();
        assert_eq!(held, expected, "shard {id}");
    }
    for t in &tenants {
        assert_eq!(feed_ids(&node.url(), &node.token(t, "u").unwrap()).await, vec![t.clone()], "{t} sees only its own");
    }

    // A restart with the shards the other way round keeps every tenant where it was.
    drop(node);
    node = pg_server_on(&format!("{b} {a}"));
    for t in &tenants {
        let token = node.token(t, "u").unwrap();
        assert_eq!(feed_ids(&node.url(), &token).await, vec![t.clone()], "{t} after the restart");
        let second = format!("{t}-2");
        let answer = push(
            &node.url(),
            Some(&token),
            Some(&uuid()),
            batch(vec![mutation(&uuid(), &second, "create", 0, json!({}))]),
        )
        .await;
        assert_eq!(answer.status, 200);
    }
    assert_eq!(placements(&b, &a, &tenants), placed, "the map is the same whatever the order");
    for url in [&a, &b] {
        let store = PgServerStore::connect(url, &PgOptions { pool_size: 1, ..PgOptions::default() }).await.unwrap();
        let id = store.shard_id().await.unwrap().to_string();
        for t in &tenants {
            let here = by_shard[id.as_str()].contains(t.as_str());
            assert_eq!(store.stats(t).await.unwrap().seq, if here { 2 } else { 0 }, "{t} on shard {id}");
        }
    }
}

#[test]
fn shards_refuses_a_sqlite_file_and_the_same_database_twice() {
    let a = converge_test_support::pg::fresh_url();
    let (ok, _, err) =
        converge_test_support::converge_status(bin(), &["shards", "--db", &a, "--db", "server.db"]).unwrap();
    assert!(!ok && err.contains("not a PostgreSQL URL"), "{err}");
    let (ok, _, err) = converge_test_support::converge_status(bin(), &["shards", "--db", &a, "--db", &a]).unwrap();
    assert!(!ok && err.contains("given twice"), "{err}");
}
