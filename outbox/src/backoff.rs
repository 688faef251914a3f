//! Exponential backoff between reconnection attempts, with a ceiling.

use std::time::Duration;

/// Doubles the delay after each failure, from `initial` up to `ceiling`.
#[derive(Debug, Clone)]
pub struct Backoff {
    initial: Duration,
    ceiling: Duration,
    next: Duration,
}

impl Backoff {
    pub fn new(initial: Duration, ceiling: Duration) -> Self {
        Backoff {
            initial,
            ceiling,
            next: initial,
        }
    }

    /// The delay to wait now; the one after it is twice as long.
    pub fn next_delay(&mut self) -> Duration {
        let delay = self.next;
        self.next = (self.next * 2).min(self.ceiling);
        delay
    }

    pub fn reset(&mut self) {
        self.next = self.initial;
    }
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff::new(Duration::from_millis(100), Duration::from_secs(5))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_up_to_the_ceiling_and_reset() {
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_millis(350));
        let delays: Vec<u128> = (0..4).map(|_| backoff.next_delay().as_millis()).collect();
        assert_eq!(delays, [100, 200, 350, 350]);
        backoff.reset();
        assert_eq!(backoff.next_delay(), Duration::from_millis(100));
    }
}
