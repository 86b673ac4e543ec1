//! The server store conformance suite: the sync service over every backend (a real SQLite file, a
//! real PostgreSQL schema): push, pull, records, idempotency, tenancy, concurrency and compaction,
//! all through `SyncService::scoped`.

mod compact;
mod concurrency;
mod idempotency;
mod pull;
mod push;
mod support;
mod tenancy;
