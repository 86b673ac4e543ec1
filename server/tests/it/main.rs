//! Integration tests of the sync service over a real SQLite file: push, pull, records,
//! idempotency, tenancy and concurrency, all through `SyncService::scoped`.

mod concurrency;
mod idempotency;
mod pull;
mod push;
mod support;
mod tenancy;
