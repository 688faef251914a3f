//! The may ↔ tokio bridge: how an HTTP handler, running as a `may`
//! coroutine, gets work done by the tokio-based clients (PostgreSQL, Redis,
//! AMQP) without blocking the OS thread it runs on.
//!
//! The coroutine spawns the future on the tokio runtime and parks on a
//! one-shot [`Answer`]; the tokio task sends the result, which wakes the
//! coroutine. A std or crossbeam `recv` here would block a may worker
//! thread and stall every other connection scheduled on it.
//!
//! The bridge also bounds the work in flight: past `max_in_flight` a call is
//! refused at once with [`BridgeError::Overloaded`] (the handler answers 503
//! with `Retry-After`) instead of queueing without limit.
//!
//! # Layout
//! - this module: [`Bridge`], running a future for a coroutine;
//! - `reply`: the one-shot [`Reply`] and [`Answer`] it waits on, which the
//!   order service's group-commit writer answers too;
//! - `deadlines`: the one thread that ends waits at their deadline.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::runtime::Handle;

mod deadlines;
mod reply;

pub use reply::{Answer, Reply, reply_channel};

/// Why a bridged call produced no result.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum BridgeError {
    #[error("too much work in flight")]
    Overloaded,
    #[error("no answer within the deadline")]
    TimedOut,
    #[error("the task ended without an answer")]
    Lost,
}

/// Hands futures to a tokio runtime and parks the calling coroutine.
#[derive(Clone)]
pub struct Bridge {
    handle: Handle,
    in_flight: Arc<AtomicUsize>,
    max_in_flight: usize,
    timeout: Duration,
}

impl Bridge {
    pub fn new(handle: Handle, max_in_flight: usize, timeout: Duration) -> Self {
        Bridge {
            handle,
            in_flight: Arc::new(AtomicUsize::new(0)),
            max_in_flight,
            timeout,
        }
    }

    /// Runs `work` on tokio and waits for its output, parking the coroutine.
    ///
    /// The in-flight slot is held until `work` finishes, even when the
    /// caller gave up waiting, so the bound counts real work on the stores.
    pub fn run<F>(&self, work: F) -> Result<F::Output, BridgeError>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        let slot = self.admit()?;
        let (reply, mut answer) = reply_channel();
        self.handle.spawn(async move {
            let output = work.await;
            drop(slot);
            reply.send(output);
        });
        answer.wait(self.timeout)
    }

    /// Work currently running on behalf of callers.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// Takes a slot if one is free. The count moves only for a call that
    /// gets one: a refused call adding itself before looking would push the
    /// count past the real work until it took itself off again, refusing
    /// callers below the bound meanwhile (spurious 503s in a burst).
    fn admit(&self) -> Result<Slot, BridgeError> {
        self.in_flight
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |running| {
                (running < self.max_in_flight).then_some(running + 1)
            })
            .map(|_| Slot(self.in_flight.clone()))
            .map_err(|_| BridgeError::Overloaded)
    }

    pub fn handle(&self) -> &Handle {
        &self.handle
    }
}

/// Holds one unit of the in-flight bound; releases it when dropped.
struct Slot(Arc<AtomicUsize>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap()
    }

    #[test]
    fn a_coroutine_gets_the_output_of_tokio_work() {
        let runtime = runtime();
        let bridge = Bridge::new(runtime.handle().clone(), 8, Duration::from_secs(5));
        let answer = may::go!(move || {
            bridge.run(async {
                tokio::time::sleep(Duration::from_millis(5)).await;
                41 + 1
            })
        })
        .join()
        .unwrap();
        assert_eq!(answer, Ok(42));
    }

    #[test]
    fn work_past_the_bound_is_refused_at_once() {
        let runtime = runtime();
        let bridge = Bridge::new(runtime.handle().clone(), 1, Duration::from_secs(5));
        let (release, wait_for_release) = tokio::sync::oneshot::channel::<()>();
        let first = bridge.clone();
        let pending = std::thread::spawn(move || {
            first.run(async move {
                let _ = wait_for_release.await;
            })
        });
        while bridge.in_flight() == 0 {
            std::thread::yield_now();
        }
        assert_eq!(bridge.run(async {}), Err(BridgeError::Overloaded));
        release.send(()).unwrap();
        assert_eq!(pending.join().unwrap(), Ok(()));
        assert_eq!(bridge.in_flight(), 0);
    }

    #[test]
    fn refused_calls_never_count_as_work_in_flight() {
        let runtime = runtime();
        let bridge = Bridge::new(runtime.handle().clone(), 1, Duration::from_secs(5));
        let held = bridge.admit().expect("the only slot is free");
        let refusing = bridge.clone();
        let refusals = std::thread::spawn(move || {
            for _ in 0..200_000 {
                assert_eq!(refusing.admit().err(), Some(BridgeError::Overloaded));
            }
        });
        let mut most = 0;
        while !refusals.is_finished() {
            most = most.max(bridge.in_flight());
        }
        refusals.join().unwrap();
        assert_eq!(most, 1, "a refused call was counted as running");
        drop(held);
        assert_eq!(bridge.in_flight(), 0);
    }

    #[test]
    fn a_slow_task_times_out_and_a_panicking_one_is_lost() {
        let runtime = runtime();
        let bridge = Bridge::new(runtime.handle().clone(), 8, Duration::from_millis(20));
        let slow = bridge.run(async { tokio::time::sleep(Duration::from_secs(5)).await });
        assert_eq!(slow, Err(BridgeError::TimedOut));
        let patient = Bridge::new(runtime.handle().clone(), 8, Duration::from_secs(30));
        let lost = patient.run(async { panic!("task failed") });
        assert_eq!(lost.map(|_: ()| ()), Err(BridgeError::Lost));
    }
}
