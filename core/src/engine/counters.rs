//! A record's counters (its outbox ops, its held ops, its open conflicts) change here and
//! nowhere else, each by one function; none goes below zero (that would mean the counters and
//! the rows they count disagree, and the transaction is refused instead of wrapping).

use crate::error::{Error, Result};
use crate::store::{LocalRecord, OpState};

impl LocalRecord {
    /// An op of the record joined the outbox.
    pub(crate) fn op_added(&mut self) {
        self.pending += 1;
    }

    /// An op of the record, in `state`, left the outbox (acknowledged, folded into a conflict,
    /// cancelled or discarded).
    pub(crate) fn op_removed(&mut self, state: OpState) -> Result<()> {
        self.pending = count_down(self, self.pending, "outbox op")?;
        if state.is_held() {
            self.op_unheld()?;
        }
        Ok(())
    }

    /// An op of the record was held for the app (a dead letter, or needing action).
    pub(crate) fn op_held(&mut self) {
        self.failed += 1;
    }

    /// A held op of the record goes out again, or left the outbox.
    pub(crate) fn op_unheld(&mut self) -> Result<()> {
        self.failed = count_down(self, self.failed, "held op")?;
        Ok(())
    }

    /// A conflict of the record opened.
    pub(crate) fn conflict_opened(&mut self) {
        self.conflicts += 1;
    }

    /// An open conflict of the record was settled.
    pub(crate) fn conflict_closed(&mut self) -> Result<()> {
        self.conflicts = count_down(self, self.conflicts, "open conflict")?;
        Ok(())
    }
}

fn count_down(rec: &LocalRecord, n: u32, what: &str) -> Result<u32> {
    n.checked_sub(1).ok_or_else(|| {
        Error::fatal(format!(
            "{}/{}: no {what} left to count down; the record's counters disagree with the store",
            rec.entity, rec.record_id
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::write::new_local;

    #[test]
    fn counters_refuse_to_go_below_zero() {
        let mut rec = new_local("notes", "n");
        assert!(rec.op_removed(OpState::Pending).is_err());
        assert!(rec.op_unheld().is_err());
        assert!(rec.conflict_closed().is_err());
        rec.op_added();
        rec.op_held();
        rec.op_removed(OpState::DeadLetter).unwrap();
        assert_eq!((rec.pending, rec.failed), (0, 0));
    }
}
