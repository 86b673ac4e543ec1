//! The transport conformance suite: one set of cases, written once against `SyncApi`, run
//! against the service called in-process, the HTTP transport and the gRPC transport, the two
//! wires over real sockets to a real `converge serve` child process, on SQLite and on PostgreSQL.
//! Same inputs, same answers, same error classes: a new transport (or server store) is done when
//! it passes every case.

mod cases;
mod target;

/// Runs each case against each target, one `#[tokio::test]` per pair.
macro_rules! conformance {
    ($($case:ident),* $(,)?) => {
        mod in_process {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                super::cases::$case(&super::target::Target::in_process()).await;
            })*
        }
        mod http {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                super::cases::$case(&super::target::Target::http()).await;
            })*
        }
        mod grpc {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                super::cases::$case(&super::target::Target::grpc()).await;
            })*
        }
        mod http_pg {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                super::cases::$case(&super::target::Target::http_pg()).await;
            })*
        }
        mod grpc_pg {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                super::cases::$case(&super::target::Target::grpc_pg()).await;
            })*
        }
    };
}

conformance!(
    push_outcomes,
    replay_gives_the_stored_answer_and_changes_nothing,
    a_reused_key_is_refused,
    an_op_id_resent_in_a_new_batch_gets_its_stored_result,
    a_key_in_flight_is_refused_and_a_busy_store_says_when_to_retry,
    bad_batches_are_refused_whole,
    limits,
    cursors_and_paging,
    records_and_tombstones,
    tenants_are_isolated,
    bad_and_expired_tokens,
    notices,
    token_scopes,
);
