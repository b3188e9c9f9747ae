//! Bounded exponential backoff for the HTTP calls (API and embedding
//! endpoint), honouring the server's `Retry-After`: which failures are worth
//! another try ([`is_transient`]), and the one loop that retries them
//! ([`Backoff::retry`]) with a hook that shows each wait.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// HTTP statuses that say "later" rather than "no": a timeout, too early,
/// too many requests, and the server errors a next try may not meet.
pub fn is_transient(status: u16) -> bool {
    matches!(status, 408 | 425 | 429 | 500 | 502 | 503 | 504)
}

/// A failed try worth another.
#[derive(Debug, Clone)]
pub struct Transient {
    /// The HTTP status, or 0 when no answer came (connection, timeout).
    pub status: u16,
    pub reason: String,
    /// The server's `Retry-After`.
    pub after: Option<Duration>,
}

/// Called before each retry with what failed and how long the client waits.
pub type RetryHook = Arc<dyn Fn(&RetryNotice) + Send + Sync>;

#[derive(Debug, Clone)]
pub struct RetryNotice {
    pub attempt: u32,
    pub of: u32,
    pub wait: Duration,
    pub reason: String,
}

/// The tries ran out; the last failure and how many tries were made.
#[derive(Debug, Clone)]
pub struct Exhausted {
    pub last: Transient,
    pub attempts: u32,
}

/// How often and how patiently to retry a failing call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// Total tries, the first one included; at least 1.
    pub attempts: u32,
    /// The wait after the first failure; it doubles after each further one.
    pub base: Duration,
    /// No single wait is longer, whatever the server asks for.
    pub max: Duration,
}

impl Default for Backoff {
    /// Six tries over about 30 seconds: long enough to ride out a restart
    /// of the API or its database, short enough to fail while the user
    /// still watches.
    fn default() -> Self {
        Backoff {
            attempts: 6,
            base: Duration::from_millis(500),
            max: Duration::from_secs(15),
        }
    }
}

impl Backoff {
    /// The wait before try number `failed + 1`, after `failed` failures.
    /// A `Retry-After` from the server wins over the exponential schedule
    /// when it is longer (it knows when it will be back), within `max`.
    pub fn delay(&self, failed: u32, retry_after: Option<Duration>) -> Duration {
        let exponential = self
            .base
            .saturating_mul(1u32 << failed.saturating_sub(1).min(20))
            .min(self.max);
        // Up to 20% jitter, so that many agents restarted together do not
        // return in lockstep.
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let jittered = exponential.mul_f64(1.0 + f64::from(nanos % 200) / 1000.0);
        match retry_after {
            Some(wait) => wait.max(jittered).min(self.max),
            None => jittered.min(self.max),
        }
    }
}

impl Backoff {
    /// Calls `once` until it answers (`Ok`, a success or a failure that is
    /// final), or its transient failures use up the tries; `hook` hears of
    /// each wait before it happens.
    pub fn retry<T>(
        &self,
        hook: Option<&RetryHook>,
        mut once: impl FnMut() -> Result<T, Transient>,
    ) -> Result<T, Exhausted> {
        let attempts = self.attempts.max(1);
        let mut failed = 0;
        loop {
            let last = match once() {
                Ok(answer) => return Ok(answer),
                Err(transient) => transient,
            };
            failed += 1;
            if failed >= attempts {
                return Err(Exhausted { last, attempts });
            }
            let wait = self.delay(failed, last.after);
            if let Some(hook) = hook {
                hook(&RetryNotice {
                    attempt: failed + 1,
                    of: attempts,
                    wait,
                    reason: if last.status == 0 {
                        last.reason
                    } else {
                        format!("{}: {}", last.status, last.reason)
                    },
                });
            }
            std::thread::sleep(wait);
        }
    }
}

/// Parses a `Retry-After` value: delta-seconds or an HTTP date.
pub fn parse_retry_after(value: &str) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let when = chrono::DateTime::parse_from_rfc2822(value).ok()?;
    let wait = when.with_timezone(&chrono::Utc) - chrono::Utc::now();
    Some(wait.to_std().unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_double_up_to_the_cap() {
        let b = Backoff {
            attempts: 10,
            base: Duration::from_millis(100),
            max: Duration::from_secs(1),
        };
        let within = |d: Duration, lo: u64, hi: u64| {
            assert!(
                d >= Duration::from_millis(lo) && d <= Duration::from_millis(hi),
                "{d:?} not in {lo}..={hi} ms"
            )
        };
        within(b.delay(1, None), 100, 120);
        within(b.delay(2, None), 200, 240);
        within(b.delay(3, None), 400, 480);
        within(b.delay(9, None), 1000, 1000);
        // The server's longer wait is honoured, a shorter one does not
        // shorten ours, and neither exceeds the cap.
        within(b.delay(1, Some(Duration::from_millis(700))), 700, 700);
        within(b.delay(3, Some(Duration::from_millis(10))), 400, 480);
        within(b.delay(1, Some(Duration::from_secs(60))), 1000, 1000);
    }

    #[test]
    fn the_loop_retries_transient_failures_only_and_tells_the_hook() {
        let backoff = Backoff {
            attempts: 3,
            base: Duration::from_millis(1),
            max: Duration::from_millis(2),
        };
        let heard = Arc::new(std::sync::Mutex::new(Vec::new()));
        let log = heard.clone();
        let hook: RetryHook = Arc::new(move |n: &RetryNotice| {
            log.lock()
                .unwrap()
                .push((n.attempt, n.of, n.reason.clone()));
        });
        let mut tries = 0;
        let busy = |status| Transient {
            status,
            reason: "busy".into(),
            after: None,
        };
        let answer = backoff.retry(Some(&hook), || {
            tries += 1;
            if tries < 3 { Err(busy(503)) } else { Ok(tries) }
        });
        assert_eq!(answer.unwrap(), 3);
        assert_eq!(
            *heard.lock().unwrap(),
            [
                (2, 3, "503: busy".to_owned()),
                (3, 3, "503: busy".to_owned())
            ]
        );
        let out = backoff.retry(None, || Err::<(), _>(busy(0))).unwrap_err();
        assert_eq!((out.attempts, out.last.status), (3, 0));
        assert!(is_transient(429) && is_transient(425) && !is_transient(404));
    }

    #[test]
    fn retry_after_takes_seconds_and_dates() {
        assert_eq!(parse_retry_after(" 7 "), Some(Duration::from_secs(7)));
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon"), None);
    }
}
