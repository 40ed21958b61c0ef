//! When a failed attempt runs again: `base × 2^(attempt−1)`, capped, ±20% jitter (SPEC §2).

use rand::Rng;

/// The retry rules of one control plane.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Claims a job gets before it fails.
    pub max_attempts: i32,
    /// Delay after the first failed attempt, ms.
    pub base_ms: i64,
    /// Longest delay, ms.
    pub cap_ms: i64,
}

impl RetryPolicy {
    /// The delay before the next attempt after `attempt` attempts, without jitter.
    pub fn nominal_delay_ms(&self, attempt: i32) -> i64 {
        let doublings = attempt.saturating_sub(1).clamp(0, 40) as u32;
        self.base_ms
            .saturating_mul(1_i64 << doublings)
            .min(self.cap_ms)
    }

    /// The delay with ±20% jitter, so retries of many jobs that failed together spread out.
    pub fn delay_ms(&self, attempt: i32) -> i64 {
        let nominal = self.nominal_delay_ms(attempt) as f64;
        let factor = rand::thread_rng().gen_range(0.8..=1.2);
        (nominal * factor).round() as i64
    }

    /// Whether a job that has had `attempt` claims may have another.
    pub fn may_retry(&self, attempt: i32) -> bool {
        attempt < self.max_attempts
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICY: RetryPolicy = RetryPolicy {
        max_attempts: 3,
        base_ms: 5_000,
        cap_ms: 300_000,
    };

    #[test]
    fn doubles_from_the_base_up_to_the_cap() {
        assert_eq!(POLICY.nominal_delay_ms(1), 5_000);
        assert_eq!(POLICY.nominal_delay_ms(2), 10_000);
        assert_eq!(POLICY.nominal_delay_ms(3), 20_000);
        assert_eq!(POLICY.nominal_delay_ms(10), 300_000);
        assert_eq!(POLICY.nominal_delay_ms(1000), 300_000);
    }

    #[test]
    fn jitter_stays_within_twenty_percent() {
        for _ in 0..1000 {
            let d = POLICY.delay_ms(2);
            assert!((8_000..=12_000).contains(&d), "{d}");
        }
    }

    #[test]
    fn counts_attempts() {
        assert!(POLICY.may_retry(2));
        assert!(!POLICY.may_retry(3));
    }
}
