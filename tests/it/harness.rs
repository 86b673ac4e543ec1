//! The policy test harness agrees with the engine: for every kind of answer, against live and
//! deleted records, the record `converge_policy_test` computes is the one a real device ends
//! with after a real conflict with the real service, and its default `conflicting` fields are
//! the ones the server reported.

use std::sync::{Arc, Mutex};

use converge_core::{
    Engine, Fields, MergeInput, MergePolicy, RecordState, Resolution, Scope, SyncApi, Tenancy, wire::Limits,
};
use converge_policy_test::{Conflict, FinalRecord};
use converge_server::{SqliteServerStore, SyncService};
use converge_sqlite::SqliteStore;
use converge_test_support::obj;
use serde_json::json;

/// Answers with a fixed resolution and keeps what it was asked, as the harness's `Conflict`.
struct Recorder {
    answer: Resolution,
    seen: Mutex<Option<Conflict>>,
}

impl MergePolicy for Recorder {
    fn name(&self) -> &str {
        "recorder"
    }

    fn resolve(&self, input: &MergeInput<'_>) -> Resolution {
        *self.seen.lock().unwrap() = Some(Conflict {
            entity: input.entity.to_owned(),
            record_id: input.record_id.to_owned(),
            base: input.base.clone(),
            local: input.local.clone(),
            local_hlc: input.local_hlc.clone(),
            server: input.server.clone(),
            server_meta: input.server_meta.clone(),
            server_version: input.server_version,
            server_deleted: input.server_deleted,
            conflicting: input.conflicting.to_vec(),
        });
        self.answer.clone()
    }
}

/// An edit of the record: a patch, or a delete.
#[derive(Clone, Copy)]
enum Edit {
    Patch(&'static str),
    Delete,
}

fn apply(engine: &Engine, edit: Edit) {
    match edit {
        Edit::Patch(patch) => {
            engine.patch("notes", "n", obj(serde_json::from_str(patch).unwrap())).unwrap();
        }
        Edit::Delete => engine.delete("notes", "n").unwrap(),
    }
}

/// Device A writes the base and then `server_edit`; device B, holding the base, makes
/// `local_edit` and meets the conflict, which its policy answers with `answer`. Returns what
/// the policy saw and B's record afterwards.
async fn conflict(answer: Resolution, server_edit: Edit, local_edit: Edit) -> (Conflict, FinalRecord) {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteServerStore::open(&dir.path().join("server.db")).unwrap();
    let service = SyncService::new(Arc::new(store), Limits::default());
    let api: Arc<dyn SyncApi> = service.scoped(Scope::new("acme", "u"));
    let recorder = Arc::new(Recorder { answer, seen: Mutex::new(None) });
    let open = |name: &str, policy: Option<Arc<Recorder>>| {
        let mut b = Engine::builder(Box::new(SqliteStore::open(dir.path().join(name)).unwrap())).api(api.clone());
        if let Some(p) = policy {
            b = b.policy("notes", p);
        }
        b.build().unwrap()
    };
    let (a, b) = (open("a.db", None), open("b.db", Some(recorder.clone())));
    a.put("notes", "n", obj(json!({"title": "base", "body": "b", "n": 1}))).unwrap();
    a.sync_once().await.unwrap();
    b.sync_once().await.unwrap();
    apply(&a, server_edit);
    a.sync_once().await.unwrap();
    apply(&b, local_edit);
    b.sync_once().await.unwrap();
    let seen = recorder.seen.lock().unwrap().take().expect("the policy was asked");
    let view = b.get("notes", "n").unwrap().unwrap();
    let record: Option<Fields> = (!view.deleted).then_some(view.fields);
    let end = if view.state == RecordState::Conflict {
        FinalRecord::Open { record, reason: b.conflicts().unwrap()[0].reason.clone() }
    } else {
        FinalRecord::Settled { record }
    };
    (seen, end)
}

const SERVER: Edit = Edit::Patch(r#"{"title": "server", "n": 2}"#);
const LOCAL: Edit = Edit::Patch(r#"{"title": "local", "body": null, "extra": true}"#);

fn answers() -> Vec<Resolution> {
    vec![
        Resolution::TakeLocal,
        Resolution::TakeServer,
        Resolution::Merged { fields: obj(json!({"title": "merged", "n": 2, "gone": null})), notice: "m".into() },
        Resolution::NeedsReview { reason: "you decide".into() },
    ]
}

#[tokio::test]
async fn the_harness_ends_every_answer_with_the_engines_record() {
    let mut checked = 0;
    for (server_edit, local_edit) in [(SERVER, LOCAL), (Edit::Delete, LOCAL), (SERVER, Edit::Delete)] {
        for answer in answers() {
            let (seen, engine_end) = conflict(answer.clone(), server_edit, local_edit).await;
            let harness_end = seen.final_record(&answer);
            assert_eq!(harness_end, engine_end, "{answer:?} for {seen:?}");
            let mut reported = seen.conflicting.clone();
            reported.sort();
            let mut default = seen.default_conflicting();
            default.sort();
            assert_eq!(default, reported, "the default conflicting fields for {seen:?}");
            checked += usize::from(matches!(harness_end, FinalRecord::Open { .. }));
        }
    }
    // NeedsReview three times, and TakeLocal and Merged against the server's delete.
    assert_eq!(checked, 5, "the scenarios reach both ends");
}
