//! Quota windows: deployments count per UTC day and per UTC month, and a refusal says when the
//! window opens again (`Retry-After`).

use chrono::{DateTime, Datelike, NaiveDate, TimeZone, Utc};

/// Seconds a refusal for `maxConcurrentDeploys` asks the client to wait: deployments usually
/// end within this, and the client then finds out.
pub const IN_FLIGHT_RETRY_SECS: u64 = 5;

/// Start of the UTC day and month holding `now` (milliseconds), and when each ends.
pub struct Windows {
    /// Midnight UTC today.
    pub day_start: i64,
    /// Midnight UTC tomorrow.
    pub day_end: i64,
    /// The first of this month, UTC.
    pub month_start: i64,
    /// The first of next month, UTC.
    pub month_end: i64,
}

fn millis(date: NaiveDate) -> i64 {
    Utc.from_utc_datetime(&date.and_hms_opt(0, 0, 0).unwrap_or_default())
        .timestamp_millis()
}

/// The windows around `now_millis`.
pub fn windows(now_millis: i64) -> Windows {
    let now: DateTime<Utc> = DateTime::from_timestamp_millis(now_millis).unwrap_or_default();
    let today = now.date_naive();
    let first = today.with_day(1).unwrap_or(today);
    let next_month = if first.month() == 12 {
        NaiveDate::from_ymd_opt(first.year() + 1, 1, 1)
    } else {
        NaiveDate::from_ymd_opt(first.year(), first.month() + 1, 1)
    }
    .unwrap_or(first);
    Windows {
        day_start: millis(today),
        day_end: millis(today.succ_opt().unwrap_or(today)),
        month_start: millis(first),
        month_end: millis(next_month),
    }
}

/// Whole seconds from `now` to `end` (at least 1).
pub fn seconds_until(now_millis: i64, end_millis: i64) -> u64 {
    let ms = (end_millis - now_millis).max(0) as u64;
    ms.div_ceil(1000).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_are_utc_days_and_months() {
        // 2026-12-31T23:59:59Z
        let now = 1_798_761_599_000;
        let w = windows(now);
        assert_eq!(seconds_until(now, w.day_end), 1);
        assert_eq!(seconds_until(now, w.month_end), 1);
        assert_eq!(w.day_end - w.day_start, 86_400_000);
        assert_eq!(w.month_end - w.month_start, 31 * 86_400_000);
    }
}
