//! The simulated world's pieces: a shared clock with per-device skew, seeded ids, and devices
//! whose stores live in files so a restart reopens them from disk.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use converge_core::{Clock, Engine, IdSource};
use converge_sqlite::{Options, SqliteStore};

use crate::net::Link;
use crate::rng::Rng;

/// Simulated time: one base advanced by the driver; each device sees it with its own skew.
#[derive(Debug)]
pub(crate) struct SimClock {
    base: Arc<AtomicU64>,
    skew_ms: i64,
}

impl SimClock {
    /// A device's view of the shared base time.
    pub(crate) fn new(base: Arc<AtomicU64>, skew_ms: i64) -> SimClock {
        SimClock { base, skew_ms }
    }
}

impl Clock for SimClock {
    fn now_ms(&self) -> u64 {
        self.base.load(Ordering::SeqCst).saturating_add_signed(self.skew_ms)
    }
}

/// UUIDs from a seeded generator.
pub(crate) struct SeededIds(Mutex<Rng>);

impl SeededIds {
    /// Ids from this generator.
    pub(crate) fn new(rng: Rng) -> SeededIds {
        SeededIds(Mutex::new(rng))
    }
}

impl IdSource for SeededIds {
    fn new_uuid(&self) -> uuid::Uuid {
        let mut rng = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let bytes = (u128::from(rng.next_u64()) << 64 | u128::from(rng.next_u64())).to_be_bytes();
        uuid::Builder::from_random_bytes(bytes).into_uuid()
    }
}

/// One simulated device.
pub(crate) struct Device {
    /// Its name, also its device id.
    pub(crate) name: String,
    path: PathBuf,
    engine: Option<Engine>,
    /// Its network link.
    pub(crate) link: Arc<Link>,
    clock: Arc<SimClock>,
    ids: Arc<SeededIds>,
}

/// The entities of the simulation and the built-in policy each is registered with.
pub(crate) const ENTITIES: [(&str, &str); 3] =
    [("notes", "field_merge"), ("flags", "lww"), ("orders", "server_authoritative")];

fn open_engine(name: &str, path: &PathBuf, link: &Arc<Link>, clock: &Arc<SimClock>, ids: &Arc<SeededIds>) -> Engine {
    let options = Options { device_id: Some(name.to_owned()), ..Options::default() };
    let store = SqliteStore::open_with(path, options).expect("open a device store");
    let mut b = Engine::builder(Box::new(store)).api(link.clone()).clock(clock.clone()).ids(ids.clone());
    for (entity, policy) in ENTITIES {
        b = b.policy(entity, converge_policies::builtin(policy).expect("a built-in policy"));
    }
    b.build().expect("open an engine")
}

impl Device {
    /// A new device with its store in `dir`.
    pub(crate) fn new(
        name: &str,
        dir: &std::path::Path,
        link: Arc<Link>,
        clock: Arc<SimClock>,
        ids: Arc<SeededIds>,
    ) -> Device {
        let path = dir.join(format!("{name}.db"));
        let engine = open_engine(name, &path, &link, &clock, &ids);
        Device { name: name.to_owned(), path, engine: Some(engine), link, clock, ids }
    }

    /// The engine over its store.
    pub(crate) fn engine(&self) -> &Engine {
        self.engine.as_ref().expect("the device is running")
    }

    /// Kills the app and starts it again: the engine is dropped and the store reopened from disk.
    pub(crate) fn restart(&mut self) {
        // Drop the old engine (and its store) before opening the file again.
        self.engine = None;
        self.engine = Some(open_engine(&self.name, &self.path, &self.link, &self.clock, &self.ids));
    }
}
