//! CPU time and peak RSS of a server process, read from `/proc/<pid>/stat` and
//! `/proc/<pid>/status` (Linux only).

use std::process::Command;

use anyhow::{Context, Result, bail};

/// Clock ticks per second for `utime`/`stime`. Read once from `getconf CLK_TCK` (the crate
/// forbids `unsafe`, so no direct `sysconf`); 100 is the Linux value on every common
/// architecture.
pub fn clock_ticks() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse::<f64>().ok())
        .filter(|t| *t > 0.0)
        .unwrap_or(100.0)
}

/// A process being measured.
#[derive(Debug, Clone, Copy)]
pub struct Proc {
    pub pid: u32,
    ticks: f64,
}

impl Proc {
    pub fn new(pid: u32) -> Proc {
        Proc {
            pid,
            ticks: clock_ticks(),
        }
    }

    /// utime + stime in seconds.
    pub fn cpu_seconds(&self) -> Result<f64> {
        let path = format!("/proc/{}/stat", self.pid);
        let text = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
        let ticks = parse_stat_cpu_ticks(&text).with_context(|| format!("parsing {path}"))?;
        Ok(ticks as f64 / self.ticks)
    }

    /// (VmHWM, VmRSS) in KiB.
    pub fn memory_kib(&self) -> Result<(u64, u64)> {
        let path = format!("/proc/{}/status", self.pid);
        let text = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
        let hwm = status_field_kib(&text, "VmHWM").with_context(|| format!("VmHWM in {path}"))?;
        let rss = status_field_kib(&text, "VmRSS").with_context(|| format!("VmRSS in {path}"))?;
        Ok((hwm, rss))
    }
}

/// utime (field 14) + stime (field 15) of a `/proc/<pid>/stat` line. The command name
/// (field 2) is in parentheses and may hold spaces, so fields are counted after the last `)`.
pub fn parse_stat_cpu_ticks(stat: &str) -> Result<u64> {
    let Some(close) = stat.rfind(')') else {
        bail!("no `)` in stat line");
    };
    // After ")": field 3 (state) is index 0, so utime (14) is index 11 and stime (15) is 12.
    let fields: Vec<&str> = stat[close + 1..].split_whitespace().collect();
    let get = |i: usize| -> Result<u64> {
        fields
            .get(i)
            .with_context(|| format!("stat has only {} fields after the name", fields.len()))?
            .parse::<u64>()
            .context("not a number")
    };
    Ok(get(11)? + get(12)?)
}

/// A `Name:   1234 kB` line of `/proc/<pid>/status`.
pub fn status_field_kib(status: &str, name: &str) -> Option<u64> {
    status.lines().find_map(|line| {
        let rest = line.strip_prefix(name)?.strip_prefix(':')?;
        rest.split_whitespace().next()?.parse().ok()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_after_a_name_with_spaces() {
        let stat = "4242 (docker registry) S 1 4242 4242 0 -1 4194560 100 0 0 0 250 75 0 0 20 0 9 0 1000 0 0";
        assert_eq!(parse_stat_cpu_ticks(stat).unwrap(), 325);
        assert!(parse_stat_cpu_ticks("4242 (x) S 1").is_err());
        assert!(parse_stat_cpu_ticks("garbage").is_err());
    }

    #[test]
    fn status_fields() {
        let status =
            "Name:\tregistry\nVmPeak:\t  900 kB\nVmHWM:\t   12345 kB\nVmRSS:\t   6789 kB\n";
        assert_eq!(status_field_kib(status, "VmHWM"), Some(12345));
        assert_eq!(status_field_kib(status, "VmRSS"), Some(6789));
        assert_eq!(status_field_kib(status, "VmSwap"), None);
    }

    #[test]
    fn reads_its_own_process() {
        let me = Proc::new(std::process::id());
        assert!(me.cpu_seconds().unwrap() >= 0.0);
        let (hwm, rss) = me.memory_kib().unwrap();
        assert!(hwm >= rss && rss > 0);
    }
}
