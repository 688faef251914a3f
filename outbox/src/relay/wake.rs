//! What wakes an idle relay: a commit of outbox rows in its own process,
//! announced by [`rows_committed`], or else its next poll.
//!
//! Nothing goes through the database for it. A NOTIFY (what relays
//! once listened for) is paid by every transaction that inserts
//! into the outbox, needed or not: its commit takes a lock that serialises
//! the notifying commits of the whole server, and every listening session
//! is woken to pass it on, while a relay under load is busy anyway. The
//! services announce their own commits (the order writer, the product
//! service's reservations and product changes); rows from other processes
//! (`outbox replay`, a dead-letter requeue, a service whose relay runs
//! apart) are found by polling: an idle relay polls again after its
//! linger, then twice as long each time nothing came, up to its poll
//! interval ([`IdleWait`]).

use std::time::Duration;

use tokio::sync::Notify;
use tokio::sync::futures::Notified;

/// One for the whole process: a wake-up a relay does not need costs it an
/// empty claim, no more.
static COMMITTED: Notify = Notify::const_new();

/// Wakes every relay of this process that waits for rows; call it after a
/// transaction that appended outbox rows committed.
pub fn rows_committed() {
    COMMITTED.notify_waiters();
}

/// The next [`rows_committed`], counted from this call on: taken before a
/// claim, it also catches a commit announced while the claim ran.
pub(crate) fn next_commit() -> Notified<'static> {
    COMMITTED.notified()
}

/// How long an idle relay waits before it claims again: from its linger
/// (at least [`IdleWait::SHORTEST`]), doubling while claims find nothing,
/// up to the poll interval.
#[derive(Debug, Clone, Copy)]
pub(crate) struct IdleWait {
    first: Duration,
    longest: Duration,
    next: Duration,
}

impl IdleWait {
    /// The first wait when the linger is shorter.
    pub(crate) const SHORTEST: Duration = Duration::from_millis(10);

    pub(crate) fn new(linger: Duration, poll_interval: Duration) -> Self {
        let first = linger.max(Self::SHORTEST).min(poll_interval);
        IdleWait {
            first,
            longest: poll_interval,
            next: first,
        }
    }

    /// The wait after one more claim that found nothing.
    pub(crate) fn after_empty(&mut self) -> Duration {
        let wait = self.next;
        self.next = (self.next * 2).min(self.longest);
        wait
    }

    /// Rows came: the next idle spell starts short again.
    pub(crate) fn reset(&mut self) {
        self.next = self.first;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn idle_waits_double_from_the_linger_up_to_the_poll_interval() {
        let mut wait = IdleWait::new(ms(35), ms(500));
        let waits: Vec<_> = (0..6).map(|_| wait.after_empty()).collect();
        assert_eq!(waits, [ms(35), ms(70), ms(140), ms(280), ms(500), ms(500)]);
        wait.reset();
        assert_eq!(wait.after_empty(), ms(35));
    }

    #[test]
    fn a_relay_without_linger_still_waits_a_little_and_never_past_its_poll_interval() {
        let mut wait = IdleWait::new(Duration::ZERO, ms(500));
        assert_eq!(wait.after_empty(), IdleWait::SHORTEST);
        let mut short = IdleWait::new(ms(35), ms(20));
        assert_eq!(short.after_empty(), ms(20));
        assert_eq!(short.after_empty(), ms(20));
    }

    #[tokio::test]
    async fn a_commit_announced_after_the_wait_was_taken_wakes_it() {
        let woken = next_commit();
        rows_committed();
        tokio::time::timeout(ms(1000), woken)
            .await
            .expect("the announced commit did not wake the wait taken before it");
    }
}
