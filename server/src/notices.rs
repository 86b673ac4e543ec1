//! Live change notices: a push that changed a tenant's feed wakes that tenant's subscriptions,
//! and each subscription's task tells its subscriber where the feed now ends, at most once per
//! [`COALESCE`].

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use converge_core::server_store::FeedHead;
use converge_core::wire::Notice;
use tokio::sync::{mpsc, watch};
use tracing::debug;

use crate::cursor::Cursor;
use crate::service::{Inner, store_error};

/// At most one notice per this long per subscription.
pub const COALESCE: Duration = Duration::from_millis(50);

/// Per tenant, a counter bumped by every push that changed the feed. A tenant is here only while
/// someone subscribes.
#[derive(Debug, Default)]
pub(crate) struct Hub {
    tenants: Mutex<HashMap<String, watch::Sender<u64>>>,
}

impl Hub {
    /// Wakes the tenant's subscriptions.
    pub(crate) fn changed(&self, tenant: &str) {
        let mut tenants = self.tenants.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(tx) = tenants.get(tenant) {
            if tx.receiver_count() == 0 {
                tenants.remove(tenant);
            } else {
                tx.send_modify(|n| *n = n.wrapping_add(1));
            }
        }
    }

    /// Wakes every tenant's subscriptions (after notices from elsewhere may have been lost).
    pub(crate) fn changed_all(&self) {
        let mut tenants = self.tenants.lock().unwrap_or_else(PoisonError::into_inner);
        tenants.retain(|_, tx| tx.receiver_count() > 0);
        for tx in tenants.values() {
            tx.send_modify(|n| *n = n.wrapping_add(1));
        }
    }

    /// A receiver woken by every later [`Hub::changed`] of the tenant.
    pub(crate) fn watch(&self, tenant: &str) -> watch::Receiver<u64> {
        let mut tenants = self.tenants.lock().unwrap_or_else(PoisonError::into_inner);
        tenants.entry(tenant.to_owned()).or_insert_with(|| watch::channel(0).0).subscribe()
    }
}

/// Feeds one subscription until its subscriber leaves: a notice whenever the feed ends past the
/// position the subscriber was last told of (`told`, first its cursor), then a pause of
/// [`COALESCE`]. A store failure ends the stream with the error the feed would give.
pub(crate) async fn feed(
    inner: Arc<Inner>,
    tenant: String,
    mut told: u64,
    mut head: FeedHead,
    mut wake: watch::Receiver<u64>,
    tx: mpsc::Sender<converge_core::Result<Notice>>,
) {
    loop {
        if head.seq > told {
            let notice = Notice { cursor: Cursor { seq: head.seq, horizon: head.horizon }.encode() };
            if tx.send(Ok(notice)).await.is_err() {
                break;
            }
            debug!(seq = head.seq, "notice sent");
            told = head.seq;
            tokio::select! {
                () = tokio::time::sleep(COALESCE) => {}
                () = tx.closed() => break,
            }
        }
        tokio::select! {
            changed = wake.changed() => if changed.is_err() { break },
            () = tx.closed() => break,
        }
        head = match inner.store.head(&tenant).await {
            Ok(head) => head,
            Err(e) => {
                let _ = tx.send(Err(store_error("head")(e))).await;
                break;
            }
        };
    }
    debug!("subscription closed");
}
