//! What a migration reports while it runs; the caller decides how (or
//! whether) to show it.

/// What `total` and `amount` count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    Rows,
    /// Assets are counted by their bytes: most of a migration's bytes are
    /// theirs, and one asset can be a thousand times another.
    Bytes,
}

/// A step of the run that is not the sending of a table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Reading and converting the legacy file; the rejects are decided.
    Reading,
    /// `POST /api/import/finish`: the sequences move past the ids.
    MovingSequences,
    /// Every table read back from the server and compared.
    Verifying,
    /// The agent's mirror brought up to date.
    Pulling,
    /// The legacy cards and vectors copied into the store.
    CopyingIntoStore,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress {
    /// A phase starts.
    Phase(Phase),
    /// Sending `table` starts: `total` rows or bytes.
    Sending {
        table: &'static str,
        total: u64,
        unit: Unit,
    },
    /// `amount` more of `table` went or were found there already.
    Advanced { table: &'static str, amount: u64 },
    /// Sending `table` is done.
    Sent { table: &'static str },
}
