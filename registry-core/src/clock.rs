//! The wall clock, in the Unix milliseconds the metadata stores keep.

use std::time::{SystemTime, UNIX_EPOCH};

pub(crate) fn now_ms() -> i64 {
    unix_ms(SystemTime::now())
}

/// `t` in Unix milliseconds (0 before the epoch).
pub(crate) fn unix_ms(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}
