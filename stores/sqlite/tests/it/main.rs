//! The device store on real files: local writes through the engine, persistence, corruption.

mod acks;
mod encryption;
mod files;
mod writes;

use converge_core::{Engine, Fields};
use converge_sqlite::SqliteStore;

pub(crate) fn obj(v: serde_json::Value) -> Fields {
    v.as_object().expect("an object").clone()
}

pub(crate) fn engine(path: &std::path::Path) -> Engine {
    Engine::builder(Box::new(SqliteStore::open(path).expect("open store"))).build().expect("engine")
}
