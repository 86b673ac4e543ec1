//! Integration tests of the sync service over a real SQLite file: push, pull, records,
//! idempotency, tenancy, concurrency and compaction, all through `SyncService::scoped`.

mod compact;
mod concurrency;
mod idempotency;
mod pull;
mod push;
mod support;
mod tenancy;
