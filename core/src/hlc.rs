//! Hybrid logical clocks: a wall-clock time, a logical counter and a device id that order every write.

use std::fmt;
use std::str::FromStr;

use crate::error::{Error, Result};

/// A hybrid logical clock timestamp, written `<unix ms, 13 digits>-<counter, 4 hex>-<device id>`.
///
/// Two HLCs compare the same as their strings: by time, then counter, then device id.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Hlc {
    /// Milliseconds since the Unix epoch.
    pub millis: u64,
    /// Logical counter for writes within the same millisecond.
    pub counter: u16,
    /// The device that made the write; breaks ties.
    pub device: String,
}

/// The largest time an HLC can carry (13 decimal digits).
pub const MAX_MILLIS: u64 = 9_999_999_999_999;

/// A device id as a regular expression; [`validate_device_id`] accepts exactly these.
pub const DEVICE_ID_PATTERN: &str = "^[A-Za-z0-9._-]{1,64}$";
/// An HLC as a regular expression; parsing accepts exactly these.
pub const HLC_PATTERN: &str = "^[0-9]{13}-[0-9a-f]{4}-[A-Za-z0-9._-]{1,64}$";

/// Checks a device id: 1 to 64 characters of `A-Z a-z 0-9 . _ -`.
pub fn validate_device_id(id: &str) -> Result<()> {
    let ok = !id.is_empty()
        && id.len() <= 64
        && id.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok { Ok(()) } else { Err(Error::InvalidInput("a device id is 1-64 characters of A-Z a-z 0-9 . _ -".into())) }
}

impl Hlc {
    /// The smallest HLC for a device.
    pub fn zero(device: &str) -> Hlc {
        Hlc { millis: 0, counter: 0, device: device.to_owned() }
    }
}

impl fmt::Display for Hlc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.millis > MAX_MILLIS {
            return write!(f, "{:013}-{:04x}-{}", self.millis, self.counter, self.device);
        }
        // The fixed-width head, digit by digit: the server writes one per changed field.
        let mut head = *b"0000000000000-0000-";
        let mut ms = self.millis;
        for d in head[..13].iter_mut().rev() {
            *d = b'0' + (ms % 10) as u8;
            ms /= 10;
        }
        for (i, d) in head[14..18].iter_mut().enumerate() {
            *d = b"0123456789abcdef"[usize::from(self.counter >> (12 - 4 * i) & 0xf)];
        }
        // Only ASCII digits and dashes were written.
        f.write_str(std::str::from_utf8(&head).map_err(|_| fmt::Error)?)?;
        f.write_str(&self.device)
    }
}

impl FromStr for Hlc {
    type Err = Error;

    fn from_str(s: &str) -> Result<Hlc> {
        let bad = || Error::InvalidInput("an hlc is <13 digits>-<4 hex digits>-<device id>".into());
        let b = s.as_bytes();
        if b.len() < 20 || b[13] != b'-' || b[18] != b'-' {
            return Err(bad());
        }
        let (ms, counter, device) = (&s[..13], &s[14..18], &s[19..]);
        if !ms.bytes().all(|c| c.is_ascii_digit()) || !counter.bytes().all(|c| c.is_ascii_hexdigit()) {
            return Err(bad());
        }
        if counter.bytes().any(|c| c.is_ascii_uppercase()) {
            return Err(bad());
        }
        validate_device_id(device).map_err(|_| bad())?;
        Ok(Hlc {
            millis: ms.parse().map_err(|_| bad())?,
            counter: u16::from_str_radix(counter, 16).map_err(|_| bad())?,
            device: device.to_owned(),
        })
    }
}

impl serde::Serialize for Hlc {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Hlc {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Hlc, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// A source of wall-clock time, so simulations can drive time themselves. Read on every local
/// write and sync step, from any thread: cheap and non-blocking. It may jump backwards (the HLC
/// absorbs that).
pub trait Clock: Send + Sync {
    /// Milliseconds since the Unix epoch.
    fn now_ms(&self) -> u64;
}

/// The system's wall clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> u64 {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
    }
}

/// A source of new UUIDs (op ids, batch keys, record ids, trace ids), so simulations can make
/// them from a seed. Called on every local write and sync step, from any thread; ids must never
/// repeat across restarts of the same store (a repeated op id would be answered with an old
/// outcome).
pub trait IdSource: Send + Sync {
    /// A new, unique UUID.
    fn new_uuid(&self) -> uuid::Uuid;
}

/// UUIDv7 from the system clock and randomness.
#[derive(Debug, Clone, Copy, Default)]
pub struct V7Ids;

impl IdSource for V7Ids {
    fn new_uuid(&self) -> uuid::Uuid {
        uuid::Uuid::now_v7()
    }
}

/// The HLC state of one device: every `tick` is greater than everything ticked or observed before.
#[derive(Debug, Clone)]
pub struct HlcClock {
    last: Hlc,
}

impl HlcClock {
    /// Starts from the last HLC persisted by this device (or zero).
    pub fn new(device: &str, last: Option<Hlc>) -> HlcClock {
        let mut last = last.unwrap_or_else(|| Hlc::zero(device));
        last.device = device.to_owned();
        HlcClock { last }
    }

    /// The last HLC handed out or observed.
    pub fn last(&self) -> &Hlc {
        &self.last
    }

    /// A new HLC, greater than every earlier one, close to `wall_ms` when the wall clock is ahead.
    pub fn tick(&mut self, wall_ms: u64) -> Hlc {
        let wall = wall_ms.min(MAX_MILLIS);
        if wall > self.last.millis {
            self.last.millis = wall;
            self.last.counter = 0;
        } else if self.last.counter == u16::MAX {
            self.last.millis += 1;
            self.last.counter = 0;
        } else {
            self.last.counter += 1;
        }
        self.last.clone()
    }

    /// Takes in an HLC seen from elsewhere so later ticks order after it.
    pub fn observe(&mut self, seen: &Hlc) {
        if (seen.millis, seen.counter) > (self.last.millis, self.last.counter) {
            self.last.millis = seen.millis;
            self.last.counter = seen.counter;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_parses_and_orders_like_strings() {
        let a = Hlc { millis: 1_764_064_800_000, counter: 0, device: "ios-7f3a".into() };
        assert_eq!(a.to_string(), "1764064800000-0000-ios-7f3a");
        assert_eq!("1764064800000-0000-ios-7f3a".parse::<Hlc>().unwrap(), a);
        let b = Hlc { millis: 1_764_064_800_000, counter: 10, device: "a".into() };
        assert!(a < b && a.to_string() < b.to_string());
        for bad in [
            "",
            "1764064800000-0000-",
            "176406480000-0000-x",
            "1764064800000-00g0-x",
            "1764064800000-000A-x",
            "1764064800000-0000-a b",
        ] {
            assert!(bad.parse::<Hlc>().is_err(), "{bad}");
        }
    }

    #[test]
    fn the_written_form_is_the_padded_format_for_every_width() {
        for millis in [0, 7, 1_764_064_800_000, 999_999_999_999, MAX_MILLIS, MAX_MILLIS + 1, u64::MAX] {
            for counter in [0, 1, 0xf, 0xa0, 0xbcd, 0xffff] {
                let h = Hlc { millis, counter, device: "dev-1".into() };
                assert_eq!(h.to_string(), format!("{millis:013}-{counter:04x}-dev-1"));
            }
        }
    }

    #[test]
    fn ticks_are_monotonic_even_when_the_wall_clock_goes_back() {
        let mut c = HlcClock::new("d1", None);
        let t1 = c.tick(1000);
        let t2 = c.tick(900);
        let t3 = c.tick(900);
        assert!(t1 < t2 && t2 < t3);
        c.observe(&Hlc { millis: 5000, counter: 7, device: "d2".into() });
        let t4 = c.tick(1000);
        assert_eq!((t4.millis, t4.counter, t4.device.as_str()), (5000, 8, "d1"));
        let restarted = HlcClock::new("d1", Some(t4.clone())).tick(0);
        assert!(restarted > t4);
    }
}
