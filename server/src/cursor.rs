//! The change feed's opaque cursors: a position in the tenant's feed and the horizon of the
//! read that gave it out, written `c<seq>` or `c<seq>.<horizon>`.

use converge_core::ApiError;
use converge_core::wire::parse_cursor;

/// A feed position and the horizon of the read that gave it out.
///
/// A cursor before the horizon is normally expired: its client may hold a record whose tombstone
/// compaction removed. But a read from the start that pages through a compacted feed stops
/// between positions below the horizon, and must be able to go on. It can, as long as the
/// horizon has not moved since it was given out: every tombstone removed since then had a
/// sequence at or below that horizon, so it was assigned before the read began, and the record
/// was already deleted when this read could first have seen it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Cursor {
    pub(crate) seq: u64,
    pub(crate) horizon: u64,
}

impl Cursor {
    /// Whether a pull from this cursor could miss a removed tombstone, given the tenant's
    /// current horizon. A horizon later than the current one comes from another copy of the data
    /// (e.g. before a restore) and expires too.
    pub(crate) fn expired(self, horizon: u64) -> bool {
        self.horizon > horizon || (self.seq < horizon && self.horizon != horizon)
    }

    /// `c<seq>`, or `c<seq>.<horizon>` once the tenant's horizon has moved.
    pub(crate) fn encode(self) -> String {
        if self.horizon == 0 { format!("c{}", self.seq) } else { format!("c{}.{}", self.seq, self.horizon) }
    }
}

/// Reads a cursor made by [`Cursor::encode`]; anything else is `invalid_request`.
pub(crate) fn decode_cursor(cursor: &str) -> Result<Cursor, ApiError> {
    let (seq, horizon) =
        parse_cursor(cursor).ok_or_else(|| ApiError::invalid("the cursor is not one this server gave out"))?;
    Ok(Cursor { seq, horizon })
}
