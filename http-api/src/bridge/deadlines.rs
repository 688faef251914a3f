//! When the bridge's waits give up: one thread keeps the deadline of every
//! parked wait and tells each waiter whose time is up.
//!
//! A coroutine parked with a timeout (`recv_timeout`) puts a timer in
//! may's timer thread, and when the answer comes first, taking the timer
//! back wakes that thread: once per request, 18% of the order service's
//! context switches at 1,000 orders/s (docs/PERFORMANCE.md). Here a wait
//! parks without a timeout and its deadline goes into a heap, which this
//! thread sweeps about every [`TICK`]; an answered wait's deadline stays
//! in the heap until then, holding its reply slot weakly, and finds it
//! gone. A deadline fires up to a tick late.
//!
//! The thread sleeps until the earliest deadline (at least a tick), or
//! until one earlier than every other arrives: under steady load, deadlines
//! arrive in the order they fall due, and it is woken by nobody.

use std::cmp::Ordering;
use std::collections::BinaryHeap;
use std::sync::{Condvar, LazyLock, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

/// How often at most the thread sweeps: deadlines are kept this late at
/// most, for at most this many wake-ups a second (a few tens).
pub(crate) const TICK: Duration = Duration::from_millis(25);

/// What to do when a deadline passes.
type Tell = Box<dyn FnOnce() + Send>;

/// One deadline.
struct Entry {
    at: Instant,
    tell: Tell,
}

// Ordered by time alone, earliest first out of the (max-)heap.
impl Ord for Entry {
    fn cmp(&self, other: &Self) -> Ordering {
        other.at.cmp(&self.at)
    }
}

impl PartialOrd for Entry {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for Entry {
    fn eq(&self, other: &Self) -> bool {
        self.at == other.at
    }
}

impl Eq for Entry {}

/// A set of deadlines and the thread that sweeps them: the process has
/// one ([`at`]); each test its own, so that no other test's deadlines wake
/// its thread.
struct Deadlines {
    heap: Mutex<BinaryHeap<Entry>>,
    /// Signalled when a deadline earlier than all others arrives.
    earlier: Condvar,
}

static DEADLINES: LazyLock<&'static Deadlines> = LazyLock::new(Deadlines::start);

/// Runs `tell` once `at` has passed (up to a [`TICK`] later), on the
/// deadlines thread: it must be short and must not block.
pub(crate) fn at(at: Instant, tell: impl FnOnce() + Send + 'static) {
    DEADLINES.at(at, tell);
}

impl Deadlines {
    /// Empty deadlines and their thread, for the rest of the process.
    fn start() -> &'static Deadlines {
        let deadlines: &'static Deadlines = Box::leak(Box::new(Deadlines {
            heap: Mutex::new(BinaryHeap::new()),
            earlier: Condvar::new(),
        }));
        std::thread::Builder::new()
            .name("deadlines".into())
            .spawn(|| deadlines.sweep())
            .expect("the deadlines thread could not start");
        deadlines
    }

    fn at(&self, at: Instant, tell: impl FnOnce() + Send + 'static) {
        self.add(Entry {
            at,
            tell: Box::new(tell),
        });
    }

    fn lock(&self) -> MutexGuard<'_, BinaryHeap<Entry>> {
        // A panic while holding the lock leaves the heap whole (push and
        // pop do not unwind halfway).
        self.heap.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn add(&self, entry: Entry) {
        let mut heap = self.lock();
        let earliest = heap.peek().is_none_or(|first| entry.at < first.at);
        heap.push(entry);
        drop(heap);
        if earliest {
            self.earlier.notify_one();
        }
    }

    fn sweep(&self) {
        loop {
            let due = {
                let mut heap = self.lock();
                let now = Instant::now();
                let mut due = Vec::new();
                while heap.peek().is_some_and(|first| first.at <= now) {
                    due.extend(heap.pop());
                }
                due
            };
            for entry in due {
                // A telling that panics (the last drop of an answer nobody
                // waits for any more runs here) must not end the thread:
                // every later wait would then park past its deadline.
                if std::panic::catch_unwind(std::panic::AssertUnwindSafe(entry.tell)).is_err() {
                    tracing::error!("a deadline's telling panicked; the deadlines thread goes on");
                }
            }
            // How long to sleep is read after the telling, under the lock
            // that `add` takes: a deadline added meanwhile counts.
            let heap = self.lock();
            let left = heap
                .peek()
                .map(|first| first.at.saturating_duration_since(Instant::now()));
            // The guard a wait gives back is dropped at once, poisoned or
            // not: the next round takes the lock again.
            match left {
                Some(left) if left.is_zero() => continue,
                Some(left) => drop(self.earlier.wait_timeout(heap, left.max(TICK))),
                None => drop(self.earlier.wait(heap)),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;

    #[test]
    fn a_telling_that_panics_leaves_the_later_deadlines_told() {
        let deadlines = Deadlines::start();
        let (told, heard) = mpsc::channel();
        let now = Instant::now();
        deadlines.at(now, || panic!("a telling panics"));
        deadlines.at(now + Duration::from_millis(10), move || {
            let _ = told.send(());
        });
        heard
            .recv_timeout(Duration::from_secs(5))
            .expect("the deadline after a panicking one was never told");
    }

    #[test]
    fn a_deadline_earlier_than_all_others_fires_at_its_own_time() {
        // Its own thread, asleep until the late deadline: only the early
        // one's arrival can wake it in time.
        let deadlines = Deadlines::start();
        let (told, tells) = mpsc::channel();
        let late = told.clone();
        deadlines.at(Instant::now() + Duration::from_secs(3600), move || {
            let _ = late.send("late");
        });
        // By then the thread sleeps on the late deadline (were it still
        // starting, it would see both and the test would prove nothing).
        std::thread::sleep(Duration::from_millis(100));
        let began = Instant::now();
        deadlines.at(began + Duration::from_millis(20), move || {
            let _ = told.send("early");
        });
        let first = tells.recv_timeout(Duration::from_secs(60));
        assert_eq!(first, Ok("early"));
        assert!(began.elapsed() >= Duration::from_millis(20), "fired early");
    }

    #[test]
    fn deadlines_fire_in_the_order_they_fall_due_whatever_the_order_they_came() {
        let deadlines = Deadlines::start();
        let (told, tells) = mpsc::channel();
        let now = Instant::now();
        for (label, millis) in [(3, 90), (1, 30), (2, 60)] {
            let told = told.clone();
            deadlines.at(now + Duration::from_millis(millis), move || {
                let _ = told.send(label);
            });
        }
        drop(told);
        let order: Vec<i32> = tells.iter().collect();
        assert_eq!(order, [1, 2, 3]);
    }

    #[test]
    fn a_deadline_added_while_others_are_told_is_not_kept_waiting_for_later_ones() {
        let deadlines = Deadlines::start();
        let (told, tells) = mpsc::channel();
        let now = Instant::now();
        deadlines.at(now + Duration::from_secs(3600), || {});
        deadlines.at(now + Duration::from_millis(20), move || {
            deadlines.at(Instant::now() + Duration::from_millis(20), move || {
                let _ = told.send("added while telling");
            });
        });
        assert_eq!(
            tells.recv_timeout(Duration::from_secs(30)),
            Ok("added while telling")
        );
    }
}
