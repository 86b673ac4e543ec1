//! The engine against the real `SyncService` on a SQLite file: lost requests and responses,
//! rebasing behind an op in flight (and not past others' changes), an edit while a batch is on
//! the wire, conflicts that fold later edits, refused ops.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use converge_core::wire::Limits;
use converge_core::{Engine, Phase, RecordState, Scope, SyncApi, Tenancy};
use converge_server::{SqliteServerStore, SyncService};
use converge_sqlite::SqliteStore;
use converge_test_support::obj;
use serde_json::json;

use crate::faults::Faulty;

struct World {
    dir: tempfile::TempDir,
    store: SqliteServerStore,
    service: SyncService,
}

impl World {
    fn new(limits: Limits) -> World {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteServerStore::open(&dir.path().join("server.db")).unwrap();
        World { service: SyncService::new(Arc::new(store.clone()), limits), store, dir }
    }

    fn api(&self) -> Arc<dyn SyncApi> {
        self.service.scoped(Scope::new("acme", "u"))
    }

    fn device(&self, name: &str) -> (Engine, Arc<Faulty>) {
        let faulty = Faulty::new(self.api());
        (open(&self.dir.path().join(format!("{name}.db")), faulty.clone()), faulty)
    }

    /// Devices a and b that both hold the note `id` with `fields`, created by a and synced.
    async fn two_devices_with(
        &self,
        id: &str,
        fields: serde_json::Value,
    ) -> ((Engine, Arc<Faulty>), (Engine, Arc<Faulty>)) {
        let (a, b) = (self.device("a"), self.device("b"));
        a.0.put("notes", id, obj(fields)).unwrap();
        a.0.sync_once().await.unwrap();
        b.0.sync_once().await.unwrap();
        (a, b)
    }
}

fn open(path: &Path, api: Arc<Faulty>) -> Engine {
    Engine::builder(Box::new(SqliteStore::open(path).unwrap())).api(api).build().unwrap()
}

#[tokio::test]
async fn a_lost_response_is_resent_with_the_same_key_and_applied_once() {
    let w = World::new(Limits::default());
    let (a, fa) = w.device("a");
    for i in 0..3 {
        a.put("notes", &format!("n{i}"), obj(json!({"i": i}))).unwrap();
    }
    fa.drop_responses.store(1, Ordering::SeqCst);
    let err = a.sync_once().await.unwrap_err();
    assert!(matches!(err, converge_core::Error::Offline { .. }));
    assert_eq!(a.status().phase, Phase::Offline);
    assert_eq!(a.status().pending, 3, "unacknowledged ops stay");
    assert!(a.status().last_error.is_some());
    // The server did apply them.
    assert_eq!(w.api().record("notes", "n0").await.unwrap().version, 1);
    // Killed and restarted: the same batch goes out again under the same key and replays.
    drop(a);
    let a = open(&w.dir.path().join("a.db"), fa.clone());
    let report = a.sync_once().await.unwrap();
    assert_eq!(report.accepted, 3);
    assert_eq!(fa.replays.load(Ordering::SeqCst), 1, "the resend was a replay of the stored response");
    assert_eq!(a.status().pending, 0);
    assert_eq!(a.status().phase, Phase::Idle);
    assert!(a.status().last_error.is_none());
    for i in 0..3 {
        assert_eq!(w.api().record("notes", &format!("n{i}")).await.unwrap().version, 1);
        assert_eq!(a.get("notes", &format!("n{i}")).unwrap().unwrap().state, RecordState::Synced);
    }
}

#[tokio::test]
async fn an_edit_made_while_its_record_is_in_flight_is_rebased_and_applied_after_it() {
    let w = World::new(Limits::default());
    let (a, fa) = w.device("a");
    a.put("notes", "n", obj(json!({"title": "one", "body": "b"}))).unwrap();
    a.sync_once().await.unwrap();
    a.patch("notes", "n", obj(json!({"title": "two"}))).unwrap();
    fa.drop_requests.store(1, Ordering::SeqCst);
    assert!(a.sync_once().await.is_err());
    // The first edit is in flight; a second one queues behind it instead of folding into it.
    a.patch("notes", "n", obj(json!({"title": "three", "body": "c"}))).unwrap();
    assert_eq!(a.status().pending, 2);
    let report = a.sync_once().await.unwrap();
    assert_eq!((report.accepted, report.conflicts), (2, 0));
    let on_server = w.api().record("notes", "n").await.unwrap();
    assert_eq!(on_server.version, 3);
    assert_eq!(serde_json::Value::Object(on_server.fields.clone()), json!({"title": "three", "body": "c"}));
    assert_eq!(a.get("notes", "n").unwrap().unwrap().fields, on_server.fields);
}

/// Device A writes 60 records, two batches: n00..n49, then n50..n59 (read from the outbox while
/// the first is on the wire). While the first is out, the engine `editor` picks patches n55: the
/// edit is absorbed into n55's unsent create, which the next batch must carry as it is now.
async fn edit_while_a_batch_is_on_the_wire(editor: impl FnOnce(&World, &Engine) -> Engine) {
    let w = World::new(Limits::default());
    let (a, fa) = w.device("a");
    for i in 0..60 {
        a.put("notes", &format!("n{i:02}"), obj(json!({"title": "first", "i": i}))).unwrap();
    }
    let writer = editor(&w, &a);
    *fa.during_push.lock().unwrap() = Some(Box::new(move || {
        writer.patch("notes", "n55", obj(json!({"title": "edited on the way"}))).unwrap();
    }));
    let report = a.sync_once().await.unwrap();
    assert_eq!((report.accepted, report.batches), (60, 2));
    let on_server = w.api().record("notes", "n55").await.unwrap();
    assert_eq!(serde_json::Value::Object(on_server.fields.clone()), json!({"title": "edited on the way", "i": 55}));
    assert_eq!(on_server.version, 1, "one create carrying the edit");
    let local = a.get("notes", "n55").unwrap().unwrap();
    assert_eq!((local.fields, local.state), (on_server.fields, RecordState::Synced));
    assert_eq!(a.status().pending, 0);
}

#[tokio::test]
async fn an_edit_made_while_a_batch_is_on_the_wire_goes_out_in_the_next_batch() {
    edit_while_a_batch_is_on_the_wire(|_, a| a.clone()).await;
}

#[tokio::test]
async fn an_edit_by_another_process_while_a_batch_is_on_the_wire_is_not_sent_stale() {
    // Another engine on the same file, as another process would be: its commits reach this
    // engine only through the file's data version.
    edit_while_a_batch_is_on_the_wire(|w, _| {
        Engine::builder(Box::new(SqliteStore::open(w.dir.path().join("a.db")).unwrap())).build().unwrap()
    })
    .await;
}

#[tokio::test]
async fn a_conflict_folds_the_later_edits_of_its_record_and_the_view_shows_the_server() {
    let w = World::new(Limits::default());
    let (a, fa) = w.device("a");
    let (b, _) = w.device("b");
    a.put("notes", "n", obj(json!({"title": "t0", "body": "b0"}))).unwrap();
    a.sync_once().await.unwrap();
    b.sync_once().await.unwrap();
    a.patch("notes", "n", obj(json!({"title": "a1"}))).unwrap();
    fa.drop_requests.store(1, Ordering::SeqCst);
    assert!(a.sync_once().await.is_err());
    a.patch("notes", "n", obj(json!({"body": "a2"}))).unwrap();
    b.patch("notes", "n", obj(json!({"title": "b1"}))).unwrap();
    b.sync_once().await.unwrap();
    let report = a.sync_once().await.unwrap();
    assert_eq!(report.conflicts, 1);
    let c = &a.conflicts().unwrap()[0];
    assert_eq!(
        serde_json::Value::Object(c.local.clone()),
        json!({"title": "a1", "body": "a2"}),
        "both local edits kept"
    );
    assert_eq!(c.server["title"], json!("b1"));
    assert_eq!(a.status().pending, 0);
    assert_eq!(a.status().open_conflicts, 1);
    let view = a.get("notes", "n").unwrap().unwrap();
    assert_eq!(view.state, RecordState::Conflict);
    assert_eq!(view.fields, w.api().record("notes", "n").await.unwrap().fields);
    // Accepting the server keeps a's values in the journal.
    a.resolve(c.id, converge_core::Choice::AcceptServer).unwrap();
    let j = &a.journal().unwrap()[0];
    assert_eq!(j.outcome, "take_server");
    assert_eq!(j.losing["body"], json!("a2"));
    assert_eq!(a.get("notes", "n").unwrap().unwrap().state, RecordState::Synced);
}

/// Seed 11730 of the simulation, reduced: a's edit of the body failed with a server error, so
/// a's next edit (the title) queued behind it on the same base. Meanwhile b changed the title.
/// The body is accepted at v3, not right after the v1 a holds: a does not know v2, so the title
/// edit keeps its base and meets b's title as a conflict instead of silently overwriting it.
#[tokio::test]
async fn an_edit_queued_behind_an_op_accepted_over_others_changes_is_checked_against_them() {
    let w = World::new(Limits::default());
    let ((a, fa), (b, _)) = w.two_devices_with("n", json!({"title": "t0", "body": "b0"})).await;
    a.patch("notes", "n", obj(json!({"body": "a body"}))).unwrap();
    fa.server_errors.store(1, Ordering::SeqCst);
    assert!(a.sync_once().await.is_err());
    a.patch("notes", "n", obj(json!({"title": "a title"}))).unwrap();
    assert_eq!(a.status().pending, 2, "the title waits behind the failed op instead of folding into it");
    b.patch("notes", "n", obj(json!({"title": "b title"}))).unwrap();
    b.sync_once().await.unwrap();
    let report = a.sync_once().await.unwrap();
    assert_eq!((report.accepted, report.conflicts), (1, 1));
    let on_server = w.api().record("notes", "n").await.unwrap();
    assert_eq!(on_server.fields["title"], json!("b title"), "b's title is not overwritten unseen");
    assert_eq!(on_server.fields["body"], json!("a body"));
    let open = a.conflicts().unwrap();
    assert_eq!(open.len(), 1, "a's title waits for review beside b's");
    assert_eq!(open[0].local["title"], json!("a title"));
    assert_eq!(open[0].server["title"], json!("b title"));
}

/// An op accepted over others' changes, then the pull fails: the device keeps the version it
/// knows, so the user's next edit (made without seeing b's title) is checked against b's change.
#[tokio::test]
async fn a_device_never_claims_a_version_it_has_not_seen() {
    let w = World::new(Limits::default());
    let ((a, fa), (b, _)) = w.two_devices_with("n", json!({"title": "t0", "body": "b0"})).await;
    a.patch("notes", "n", obj(json!({"body": "a body"}))).unwrap();
    b.patch("notes", "n", obj(json!({"title": "b title"}))).unwrap();
    b.sync_once().await.unwrap();
    fa.drop_pulls.store(1, Ordering::SeqCst);
    assert!(a.sync_once().await.is_err(), "the push went through, the pull did not");
    assert_eq!(w.api().record("notes", "n").await.unwrap().version, 3);
    let seen = a.get("notes", "n").unwrap().unwrap();
    assert_eq!(seen.version, 1, "v2 (b's title) never reached a");
    assert_eq!((seen.fields["title"].clone(), seen.fields["body"].clone()), (json!("t0"), json!("a body")));
    a.patch("notes", "n", obj(json!({"title": "a title"}))).unwrap();
    let report = a.sync_once().await.unwrap();
    assert_eq!((report.accepted, report.conflicts), (0, 1));
    assert_eq!(w.api().record("notes", "n").await.unwrap().fields["title"], json!("b title"));
    assert_eq!(a.conflicts().unwrap()[0].local["title"], json!("a title"));
}

#[tokio::test]
async fn a_refused_op_is_kept_visible_until_the_user_corrects_it() {
    let w = World::new(Limits { max_record_bytes: 200, ..Limits::default() });
    let (a, _) = w.device("a");
    a.put("notes", "big", obj(json!({"text": "x".repeat(500)}))).unwrap();
    a.put("notes", "small", obj(json!({"text": "ok"}))).unwrap();
    let report = a.sync_once().await.unwrap();
    assert_eq!((report.accepted, report.rejected), (1, 1));
    let s = a.status();
    assert_eq!((s.pending, s.needs_action, s.dead_letters), (0, 1, 0));
    let big = a.get("notes", "big").unwrap().unwrap();
    assert_eq!(big.state, RecordState::NeedsAction, "a validation refusal needs the user");
    assert_eq!(big.fields["text"].as_str().unwrap().len(), 500, "the refused value is still there");
    let held = a.held_ops().unwrap();
    assert_eq!(held.len(), 1);
    assert!(held[0].last_error.as_deref().unwrap().starts_with("record_too_large"), "{:?}", held[0].last_error);
    assert!(w.api().record("notes", "big").await.is_err());
    // The user's edit of the refused record corrects it: the op goes out again, as a new op.
    let v = a.patch("notes", "big", obj(json!({"text": "shorter"}))).unwrap();
    assert_eq!(v.state, RecordState::Pending);
    assert_eq!((a.status().pending, a.status().needs_action), (1, 0));
    a.patch("notes", "small", obj(json!({"text": "still ok"}))).unwrap();
    let report = a.sync_once().await.unwrap();
    assert_eq!((report.accepted, report.rejected), (2, 0));
    assert_eq!((a.status().pending, a.status().needs_action), (0, 0));
    assert_eq!(w.api().record("notes", "big").await.unwrap().fields["text"], json!("shorter"));
}

#[tokio::test]
async fn an_expired_cursor_re_syncs_from_the_start_keeping_pending_edits() {
    let w = World::new(Limits::default());
    let ((a, _), (b, _)) = (w.device("a"), w.device("b"));
    a.put("notes", "x", obj(json!({"v": 1}))).unwrap();
    a.sync_once().await.unwrap();
    b.sync_once().await.unwrap();
    a.put("notes", "y", obj(json!({"v": 2}))).unwrap();
    a.sync_once().await.unwrap();
    w.store.advance_horizon("acme", 2).await.unwrap();
    b.put("notes", "z", obj(json!({"v": 3}))).unwrap();
    let report = b.sync_once().await.unwrap();
    assert_eq!(report.accepted, 1);
    assert_eq!(b.list("notes").unwrap().len(), 3);
    assert_eq!(b.get("notes", "z").unwrap().unwrap().state, RecordState::Synced);
}

#[tokio::test]
async fn a_re_sync_after_compaction_deletes_what_the_server_no_longer_has() {
    let w = World::new(Limits::default());
    let ((a, _), (b, _)) = (w.device("a"), w.device("b"));
    for id in ["gone", "edited", "kept"] {
        a.put("notes", id, obj(json!({"v": 1}))).unwrap();
    }
    a.sync_once().await.unwrap();
    b.sync_once().await.unwrap();
    // b goes quiet; a deletes one record; the server compacts its tombstone away.
    a.delete("notes", "gone").unwrap();
    a.sync_once().await.unwrap();
    b.patch("notes", "edited", obj(json!({"v": 2}))).unwrap();
    let stats = w.service.compact(std::time::Duration::ZERO).await.unwrap();
    assert_eq!(stats.tombstones, 1);
    // b's cursor could have missed the delete: 410, a re-sync reads the feed as a snapshot.
    b.sync_once().await.unwrap();
    assert!(b.get("notes", "gone").unwrap().is_none_or(|r| r.deleted), "the compacted delete reaches b");
    let ids: Vec<String> = b.list("notes").unwrap().into_iter().map(|r| r.record_id).collect();
    assert_eq!(ids, ["edited", "kept"]);
    assert_eq!(b.get("notes", "edited").unwrap().unwrap().fields["v"], json!(2), "b's pending edit went out");
    assert_eq!(b.status().pending, 0);
    // The re-sync is over: the next sync pulls nothing and changes nothing.
    let report = b.sync_once().await.unwrap();
    assert_eq!(report.pulled, 0);
    assert_eq!(b.list("notes").unwrap().len(), 2);
    // A fresh device creates the id again: its versions start over below the tombstone a holds,
    // and a still takes it.
    let (c, _) = w.device("c");
    c.put("notes", "gone", obj(json!({"v": "again"}))).unwrap();
    c.sync_once().await.unwrap();
    a.sync_once().await.unwrap();
    b.sync_once().await.unwrap();
    for d in [&a, &b, &c] {
        let r = d.get("notes", "gone").unwrap().unwrap();
        assert_eq!((r.deleted, r.fields["v"].clone(), r.version), (false, json!("again"), 1));
    }
}

/// A conflict left open for review (no policy yet) is settled by the entity's policy once one is
/// registered, at the next sync; a policy that leaves it open is asked once, not every cycle.
#[tokio::test]
async fn an_open_conflict_goes_to_a_policy_registered_later() {
    let w = World::new(Limits::default());
    let ((a, _), (b, _)) = w.two_devices_with("n", json!({"title": "t0"})).await;
    b.patch("notes", "n", obj(json!({"title": "b"}))).unwrap();
    b.sync_once().await.unwrap();
    a.patch("notes", "n", obj(json!({"title": "a"}))).unwrap();
    assert_eq!(a.sync_once().await.unwrap().conflicts, 1);
    assert_eq!(a.conflicts().unwrap()[0].policy, "review", "no policy: it waits for the user");

    // A policy that still wants review is asked once.
    let asked = Arc::new(std::sync::atomic::AtomicU32::new(0));
    let counter = asked.clone();
    a.register_policy(
        "notes",
        converge_policies::policy_fn("careful", converge_core::CheckMode::Fields, move |_| {
            counter.fetch_add(1, Ordering::SeqCst);
            converge_core::Resolution::NeedsReview { reason: "a person decides".into() }
        }),
    );
    a.sync_once().await.unwrap();
    a.sync_once().await.unwrap();
    assert_eq!(asked.load(Ordering::SeqCst), 1);
    let open = a.conflicts().unwrap();
    assert_eq!((open[0].policy.as_str(), open[0].reason.as_str()), ("careful", "a person decides"));

    // Another policy settles it: the local title goes out on the server's version.
    a.register_policy("notes", converge_policies::builtin("lww").unwrap());
    a.sync_once().await.unwrap();
    assert!(a.conflicts().unwrap().is_empty());
    assert_eq!(a.status().open_conflicts, 0);
    let j = &a.journal().unwrap()[0];
    assert_eq!(j.policy, "lww");
    let on_server = w.api().record("notes", "n").await.unwrap();
    assert_eq!(on_server.fields["title"], a.get("notes", "n").unwrap().unwrap().fields["title"]);
}

/// The status shows how far a running cycle is, for a progress display; none between cycles.
#[tokio::test]
async fn a_running_cycle_shows_its_progress_in_the_status() {
    let w = World::new(Limits::default());
    let (a, fa) = w.device("a");
    for i in 0..120 {
        a.put("notes", &format!("n{i}"), obj(json!({"i": i}))).unwrap();
    }
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let (engine, into) = (a.clone(), seen.clone());
    *fa.during_push.lock().unwrap() = Some(Box::new(move || into.lock().unwrap().push(engine.status().progress)));
    let report = a.sync_once().await.unwrap();
    assert_eq!(report.batches, 3);
    let first = seen.lock().unwrap()[0].expect("progress while the first batch is out");
    assert_eq!((first.to_push, first.pushed, first.pulled), (120, 0, 0));
    assert_eq!(a.status().progress, None, "none between cycles");
}
