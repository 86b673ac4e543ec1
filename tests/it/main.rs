//! Cross-crate tests: the dependency rules of the workspace, and the engine against the real
//! service (SQLite server store on disk) in-process, through a fault-injecting `SyncApi`; and the
//! policy test harness against the engine.

mod counters;
mod deps;
mod engine;
mod faults;
mod harness;
mod live;
mod sim;
mod threads;
mod worker;
