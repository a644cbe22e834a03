//! Percentiles, medians and the JSON lines the benchmark prints.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// One line of output. Every line is a JSON object with a `kind`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Line {
    /// The timed part of one scenario against one server.
    Result(ScenarioResult),
    /// A whole-process reading of a server (taken at the end of a repetition).
    Process(ProcessReading),
    /// The client-side sha256 self-check.
    Sha256(ShaCheck),
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct ScenarioResult {
    pub scenario: String,
    pub server: String,
    pub rep: u32,
    /// Timed operations (a blob push, a blob pull, a manifest PUT, a catalog page, ...).
    pub ops: u64,
    /// Payload bytes moved in the timed part (0 when not meaningful).
    pub bytes: u64,
    pub secs: f64,
    pub ops_per_s: f64,
    /// Present for the blob scenarios.
    pub mib_per_s: Option<f64>,
    pub p50_ms: f64,
    pub p99_ms: f64,
    /// Server CPU time (user + system) spent during the timed part.
    pub server_cpu_s: Option<f64>,
    pub cpu_ms_per_op: Option<f64>,
    /// The server's VmHWM right after the timed part.
    pub server_rss_hwm_kib: Option<u64>,
    /// Responses that were not 2xx/3xx, plus socket errors (wrk only; the other scenarios fail
    /// on the first unexpected status).
    pub errors: u64,
    /// Scenario-specific numbers (repositories walked, walk time, ...).
    #[serde(default, skip_serializing_if = "serde_json::Map::is_empty")]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ProcessReading {
    pub server: String,
    pub rep: u32,
    pub pid: u32,
    pub rss_hwm_kib: u64,
    pub rss_kib: u64,
    pub cpu_s_total: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ShaCheck {
    pub gib_per_s: f64,
    pub mib_hashed: u64,
    /// What `is_x86_feature_detected!("sha")` says (the `cpufeatures` crate that `sha2` uses
    /// makes the same CPUID check and picks the SHA-NI code path when it is true).
    pub cpu_has_sha_ni: bool,
}

/// Nearest-rank percentile (`p` in 0..=100) in milliseconds; 0 for no samples.
pub fn percentile_ms(samples: &[Duration], p: f64) -> f64 {
    if samples.is_empty() {
        return 0.0;
    }
    let mut sorted: Vec<Duration> = samples.to_vec();
    sorted.sort_unstable();
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    let idx = rank.clamp(1, sorted.len()) - 1;
    sorted[idx].as_secs_f64() * 1000.0
}

/// Median of the values (mean of the two middle ones for an even count); `None` when empty.
pub fn median(values: &[f64]) -> Option<f64> {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let mid = v.len() / 2;
    Some(if v.len().is_multiple_of(2) {
        (v[mid - 1] + v[mid]) / 2.0
    } else {
        v[mid]
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let samples: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        assert_eq!(percentile_ms(&samples, 50.0), 50.0);
        assert_eq!(percentile_ms(&samples, 99.0), 99.0);
        assert_eq!(percentile_ms(&samples, 100.0), 100.0);
        assert_eq!(percentile_ms(&[Duration::from_millis(7)], 99.0), 7.0);
        assert_eq!(percentile_ms(&[], 50.0), 0.0);
    }

    #[test]
    fn medians() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), Some(2.5));
        assert_eq!(median(&[]), None);
        assert_eq!(median(&[f64::NAN, 5.0]), Some(5.0));
    }

    #[test]
    fn lines_round_trip_with_a_kind_tag() {
        let line = Line::Result(ScenarioResult {
            scenario: "push_mono_c1".into(),
            server: "ours".into(),
            ops: 3,
            ..Default::default()
        });
        let text = serde_json::to_string(&line).unwrap();
        assert!(text.starts_with(r#"{"kind":"result","#), "{text}");
        assert_eq!(serde_json::from_str::<Line>(&text).unwrap(), line);
    }
}
