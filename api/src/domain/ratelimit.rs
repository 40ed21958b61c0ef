//! The per-key rate limit: a token bucket of `rateLimitPerMinute` tokens refilled evenly over a
//! minute, so a key may burst up to its minute's worth and then goes at the steady rate.

/// One key's bucket.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TokenBucket {
    tokens: f64,
    at_millis: i64,
}

impl TokenBucket {
    /// A full bucket for a limit of `per_minute`.
    pub fn full(per_minute: u32, now_millis: i64) -> Self {
        Self {
            tokens: f64::from(per_minute),
            at_millis: now_millis,
        }
    }

    /// Takes a token at `now_millis`: `Ok` when there was one, else the seconds until there
    /// will be (for `Retry-After`, at least 1).
    pub fn take(&mut self, per_minute: u32, now_millis: i64) -> Result<(), u64> {
        let capacity = f64::from(per_minute.max(1));
        let per_milli = capacity / 60_000.0;
        let elapsed = (now_millis - self.at_millis).max(0) as f64;
        self.tokens = (self.tokens + elapsed * per_milli).min(capacity);
        self.at_millis = now_millis.max(self.at_millis);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(())
        } else {
            let wait_ms = (1.0 - self.tokens) / per_milli;
            Err(((wait_ms / 1000.0).ceil() as u64).max(1))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bursts_up_to_the_limit_then_refills() {
        let mut b = TokenBucket::full(3, 0);
        assert!(b.take(3, 0).is_ok() && b.take(3, 0).is_ok() && b.take(3, 0).is_ok());
        assert_eq!(b.take(3, 0), Err(20));
        assert!(b.take(3, 20_000).is_ok());
        assert!(b.take(3, 20_000).is_err());
    }
}
