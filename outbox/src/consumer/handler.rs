//! What a service implements to consume a queue: how an envelope decodes
//! into its event, how a batch of events applies inside the consumer's
//! transaction, and what runs after the commit.

use std::future::Future;

use deadpool_postgres::Transaction;
use platform::db::StoreError;
use uuid::Uuid;

use crate::Error;
use crate::envelope::Envelope;

/// An event with the envelope it came in.
#[derive(Debug)]
pub struct Inbound<E> {
    pub envelope: Envelope,
    pub event: E,
}

/// What a handler applies in one transaction.
#[derive(Debug)]
pub struct Batch<'a, E> {
    /// Events whose ids were not in the inbox (with [`Dedupe::Effect`]:
    /// every event): apply their effects.
    pub fresh: Vec<&'a Inbound<E>>,
    /// Events already applied before (redeliveries, replays): their effect
    /// is committed. Handlers may use them to redo idempotent after-commit
    /// work that a crash could have cut short.
    pub duplicates: Vec<&'a Inbound<E>>,
}

/// How an event applied before is told from a new one. Either way each
/// event's effect happens once; only where that is recorded differs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dedupe {
    /// The consumer records every event's id in the `inbox` table, in the
    /// batch's transaction, and hands the handler only new ones as fresh.
    Inbox,
    /// The effect is its own record: a row keyed by what the event is
    /// about, a one-way state change, an upsert ordered by version. Every
    /// event comes as fresh; the handler applies each at most once by its
    /// effect, and says how many it found applied before. One insert (and
    /// index entry) less per event.
    Effect,
}

/// Why a batch did not apply.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// This event can never apply; it goes to the dead-letter queue.
    #[error("event {message_id} can never apply: {reason}")]
    Poison { message_id: Uuid, reason: String },
    #[error(transparent)]
    Failed(#[from] Error),
}

impl From<tokio_postgres::Error> for ApplyError {
    fn from(error: tokio_postgres::Error) -> Self {
        ApplyError::Failed(error.into())
    }
}

/// A handler's store call that failed: retried when the store was out of
/// reach, set aside when it refused the data.
impl From<StoreError> for ApplyError {
    fn from(error: StoreError) -> Self {
        ApplyError::Failed(error.into())
    }
}

/// What a service does with the events of one queue.
pub trait Handler: Send + Sync + 'static {
    /// The decoded, validated event.
    type Event: Send + Sync + 'static;
    /// What the handler needs after the commit.
    type Outcome: Send + 'static;

    /// How this handler's events are deduplicated.
    const DEDUPE: Dedupe = Dedupe::Inbox;

    /// Decodes and validates an envelope; `Err` makes it a dead letter.
    fn decode(&self, envelope: &Envelope) -> std::result::Result<Self::Event, String>;

    /// Of the events handed in as fresh, how many the handler found
    /// applied before ([`Dedupe::Effect`] handlers; counted as duplicates).
    fn applied_before(_outcome: &Self::Outcome) -> usize {
        0
    }

    /// Applies the batch inside `tx`; the caller records the inbox rows
    /// (with [`Dedupe::Inbox`]) and commits.
    fn apply<'a>(
        &'a self,
        tx: &'a Transaction<'_>,
        batch: &'a Batch<'_, Self::Event>,
    ) -> impl Future<Output = std::result::Result<Self::Outcome, ApplyError>> + Send + 'a;

    /// Runs after the commit, before the ack.
    fn after_commit(&self, outcome: Self::Outcome) -> impl Future<Output = ()> + Send;
}
