//! Tenants spread over several PostgreSQL databases (shards), each tenant wholly on one.
//!
//! The map, stable and the same on every node:
//! - a tenant that has rows on a shard (its counter row, made by its first push) lives there,
//!   whatever the order of the shards or how many were added since;
//! - a tenant with no rows anywhere is placed by rendezvous hashing: the shard whose id (a UUID
//!   each database makes once, see [`PgServerStore::shard_id`]) gives the greatest
//!   `SHA-256(shard id ‖ tenant)`. Adding a shard moves no existing tenant; it takes a share of
//!   new ones.
//!
//! Every node must be given the same shards. A tenant found on two shards is refused (an
//! operator copied it by hand) rather than served half.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use async_trait::async_trait;
use converge_core::server_store::{CompactStats, FeedHead, FeedPage, PushTx, RemoteChange, ServerStore};
use converge_core::wire::Change;
use sha2::{Digest, Sha256};
use uuid::Uuid;

use super::{PgOptions, PgServerStore};
use crate::error::{Error, Result};

/// Where a tenant lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement {
    /// The shard's position in the list the store was opened with.
    pub index: usize,
    /// The shard's id.
    pub shard: Uuid,
    /// Whether the tenant has rows there already (else it will be placed there by its first push).
    pub holds: bool,
}

/// A server store over several PostgreSQL shards. Cheap to clone.
#[derive(Clone)]
pub struct ShardedStore {
    shards: Arc<Vec<(Uuid, PgServerStore)>>,
    placed: Arc<Mutex<HashMap<String, usize>>>,
}

impl std::fmt::Debug for ShardedStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShardedStore").field("shards", &self.ids()).finish_non_exhaustive()
    }
}

impl ShardedStore {
    /// Connects to every shard (migrating each). The same database twice is refused.
    pub async fn connect(urls: &[String], options: &PgOptions) -> Result<Self> {
        if urls.is_empty() {
            return Err(Error::InvalidInput("no shards given".into()));
        }
        let mut shards: Vec<(Uuid, PgServerStore)> = Vec::with_capacity(urls.len());
        for url in urls {
            let store = PgServerStore::connect(url, options).await?;
            let id = store.shard_id().await?;
            if shards.iter().any(|(seen, _)| *seen == id) {
                return Err(Error::InvalidInput(format!("shard {id} is given twice (the same database)")));
            }
            shards.push((id, store));
        }
        Ok(ShardedStore { shards: Arc::new(shards), placed: Arc::new(Mutex::new(HashMap::new())) })
    }

    /// The shards' ids, in the order given.
    pub fn ids(&self) -> Vec<Uuid> {
        self.shards.iter().map(|(id, _)| *id).collect()
    }

    /// The shards, in the order given.
    pub fn shards(&self) -> impl Iterator<Item = &PgServerStore> {
        self.shards.iter().map(|(_, s)| s)
    }

    /// Where `tenant` lives (or will, at its first push).
    pub async fn locate(&self, tenant: &str) -> Result<Placement> {
        let mut holders = Vec::new();
        for (i, (_, store)) in self.shards.iter().enumerate() {
            if store.holds(tenant).await? {
                holders.push(i);
            }
        }
        let (index, holds) = match holders.as_slice() {
            [] => (rendezvous(&self.ids(), tenant), false),
            [one] => (*one, true),
            many => return Err(Error::TenantSplit(many.iter().map(|i| self.shards[*i].0).collect())),
        };
        Ok(Placement { index, shard: self.shards[index].0, holds })
    }

    /// The store of `tenant`'s shard, remembered after the first lookup (tenants never move).
    async fn shard(&self, tenant: &str) -> Result<&PgServerStore> {
        let known = self.placed.lock().unwrap_or_else(PoisonError::into_inner).get(tenant).copied();
        let index = match known {
            Some(i) => i,
            None => {
                let p = self.locate(tenant).await?;
                self.placed.lock().unwrap_or_else(PoisonError::into_inner).insert(tenant.to_owned(), p.index);
                p.index
            }
        };
        Ok(&self.shards[index].1)
    }
}

/// The shard of a tenant with no rows anywhere: the greatest SHA-256(shard id ‖ tenant).
pub fn rendezvous(ids: &[Uuid], tenant: &str) -> usize {
    let score = |id: &Uuid| {
        let mut h = Sha256::new();
        h.update(id.as_bytes());
        h.update(tenant.as_bytes());
        h.finalize()
    };
    ids.iter().enumerate().max_by_key(|(_, id)| score(id)).map_or(0, |(i, _)| i)
}

#[async_trait]
impl ServerStore for ShardedStore {
    async fn begin_push(&self, tenant: &str) -> converge_core::Result<Box<dyn PushTx>> {
        self.shard(tenant).await?.begin_push(tenant).await
    }

    async fn changes(&self, tenant: &str, after: u64, limit: u32) -> converge_core::Result<FeedPage> {
        self.shard(tenant).await?.changes(tenant, after, limit).await
    }

    async fn head(&self, tenant: &str) -> converge_core::Result<FeedHead> {
        self.shard(tenant).await?.head(tenant).await
    }

    async fn record(&self, tenant: &str, entity: &str, record_id: &str) -> converge_core::Result<Option<Change>> {
        self.shard(tenant).await?.record(tenant, entity, record_id).await
    }

    async fn compact(&self, older_than_ms: u64) -> converge_core::Result<CompactStats> {
        let mut total = CompactStats::default();
        for (_, store) in self.shards.iter() {
            let s = store.compact(older_than_ms).await?;
            total.tombstones += s.tombstones;
            total.op_results += s.op_results;
            total.idempotency_keys += s.idempotency_keys;
            total.tenants += s.tenants;
        }
        Ok(total)
    }

    fn on_remote_change(&self, changed: RemoteChange) {
        for (_, store) in self.shards.iter() {
            store.on_remote_change(Arc::clone(&changed));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rendezvous_is_stable_under_reordering_and_adding_a_shard_moves_only_some_tenants() {
        let ids: Vec<Uuid> = (1..=3u128).map(Uuid::from_u128).collect();
        let reversed: Vec<Uuid> = ids.iter().rev().copied().collect();
        let mut four = ids.clone();
        four.push(Uuid::from_u128(4));
        let mut moved = 0;
        let mut counts = [0usize; 3];
        for t in 0..3000 {
            let tenant = format!("tenant-{t}");
            let here = rendezvous(&ids, &tenant);
            counts[here] += 1;
            assert_eq!(ids[here], reversed[rendezvous(&reversed, &tenant)], "order does not matter");
            let there = rendezvous(&four, &tenant);
            if there != here {
                assert_eq!(there, 3, "a tenant only ever moves to the new shard");
                moved += 1;
            }
        }
        // About a quarter move to the fourth shard; the three share the rest about evenly.
        assert!((600..900).contains(&moved), "{moved}");
        assert!(counts.iter().all(|c| (850..1150).contains(c)), "{counts:?}");
    }
}
