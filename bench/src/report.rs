//! Turns the JSON lines of a comparison run into Markdown: medians per scenario and server,
//! ratios ours/theirs, peak RSS, and the performance targets met or missed.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use anyhow::{Context, Result};

use crate::stats::{Line, ScenarioResult, median};

/// A target on the ratio ours/theirs of one scenario's throughput.
struct Target {
    scenario: &'static str,
    min_ratio: f64,
    /// Also require our median p99 below this many milliseconds.
    max_p99_ms: Option<f64>,
}

const TARGETS: &[Target] = &[
    Target {
        scenario: "manifest_get",
        min_ratio: 12.0,
        max_p99_ms: Some(5.0),
    },
    Target {
        scenario: "manifest_put_1k",
        min_ratio: 5.0,
        max_p99_ms: None,
    },
    Target {
        scenario: "manifest_put_10k",
        min_ratio: 5.0,
        max_p99_ms: None,
    },
    Target {
        scenario: "push_mono_c1",
        min_ratio: 2.0,
        max_p99_ms: None,
    },
    Target {
        scenario: "pull_c4",
        min_ratio: 1.2,
        max_p99_ms: None,
    },
    Target {
        scenario: "catalog_10k",
        min_ratio: 300.0,
        max_p99_ms: None,
    },
];
const RSS_TARGET: f64 = 0.4;

pub fn parse_lines(text: &str) -> Result<Vec<Line>> {
    text.lines()
        .enumerate()
        .filter(|(_, l)| l.trim_start().starts_with('{'))
        .map(|(i, l)| serde_json::from_str(l).with_context(|| format!("line {}: {l}", i + 1)))
        .collect()
}

fn throughput(r: &ScenarioResult) -> f64 {
    r.mib_per_s.unwrap_or(r.ops_per_s)
}

fn unit(scenario: &str, rs: &[&ScenarioResult]) -> &'static str {
    if rs.iter().any(|r| r.mib_per_s.is_some()) {
        "MiB/s"
    } else if scenario.starts_with("catalog") {
        "pages/s"
    } else {
        "req/s"
    }
}

fn med<F: Fn(&ScenarioResult) -> Option<f64>>(rs: &[&ScenarioResult], f: F) -> Option<f64> {
    median(&rs.iter().filter_map(|r| f(r)).collect::<Vec<_>>())
}

fn ratio(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => Some(a / b),
        _ => None,
    }
}

fn num(v: Option<f64>) -> String {
    match v {
        None => "–".to_owned(),
        Some(v) if v >= 1000.0 => format!("{v:.0}"),
        Some(v) if v >= 100.0 => format!("{v:.1}"),
        Some(v) if v >= 1.0 => format!("{v:.2}"),
        Some(v) => format!("{v:.3}"),
    }
}

fn times(v: Option<f64>) -> String {
    match v {
        None => "–".to_owned(),
        Some(v) => format!("{}x", num(Some(v))),
    }
}

/// Per scenario, in order of first appearance: the results of each server.
type Grouped<'a> = Vec<(String, BTreeMap<String, Vec<&'a ScenarioResult>>)>;

fn group(lines: &[Line]) -> Grouped<'_> {
    let mut out: Grouped<'_> = Vec::new();
    for line in lines {
        if let Line::Result(r) = line {
            let idx = match out.iter().position(|(s, _)| *s == r.scenario) {
                Some(i) => i,
                None => {
                    out.push((r.scenario.clone(), BTreeMap::new()));
                    out.len() - 1
                }
            };
            out[idx].1.entry(r.server.clone()).or_default().push(r);
        }
    }
    out
}

/// Ratios ours/theirs of throughput, rep by rep (each rep ran both servers back to back).
fn per_rep_ratios(ours: &[&ScenarioResult], theirs: &[&ScenarioResult]) -> Vec<f64> {
    ours.iter()
        .filter_map(|o| {
            let t = theirs.iter().find(|t| t.rep == o.rep)?;
            ratio(Some(throughput(o)), Some(throughput(t)))
        })
        .collect()
}

/// Peak RSS per server: per rep the highest VmHWM seen, then the median over reps.
fn peak_rss(lines: &[Line], server: &str) -> Option<f64> {
    let mut per_rep: BTreeMap<u32, u64> = BTreeMap::new();
    for line in lines {
        let (s, rep, kib) = match line {
            Line::Result(r) => match r.server_rss_hwm_kib {
                Some(k) => (&r.server, r.rep, k),
                None => continue,
            },
            Line::Process(p) => (&p.server, p.rep, p.rss_hwm_kib),
            Line::Sha256(_) => continue,
        };
        if s == server {
            let e = per_rep.entry(rep).or_default();
            *e = (*e).max(kib);
        }
    }
    median(&per_rep.values().map(|k| *k as f64).collect::<Vec<_>>())
}

pub fn render(lines: &[Line], ours: &str, theirs: &str) -> String {
    let grouped = group(lines);
    let empty = Vec::new();
    let mut md = String::new();
    let reps: std::collections::BTreeSet<u32> = lines
        .iter()
        .filter_map(|l| match l {
            Line::Result(r) => Some(r.rep),
            _ => None,
        })
        .collect();
    let _ = writeln!(
        md,
        "Medians over {} repetition(s). Throughput ratio = ours/{theirs} (higher is better); latency and CPU ratios = ours/{theirs} (lower is better).\n",
        reps.len()
    );
    let _ = writeln!(
        md,
        "| scenario | unit | ours | {theirs} | ratio ↑ | per-rep ratios | p50 ms ours / {theirs} | p99 ms ours / {theirs} | p99 ratio ↓ | server CPU ms/op ours / {theirs} | CPU ratio ↓ |"
    );
    let _ = writeln!(md, "|---|---|---|---|---|---|---|---|---|---|---|");
    for (scenario, by_server) in &grouped {
        let o = by_server.get(ours).unwrap_or(&empty);
        let t = by_server.get(theirs).unwrap_or(&empty);
        let both: Vec<&ScenarioResult> = o.iter().chain(t.iter()).copied().collect();
        let (to, tt) = (
            med(o, |r| Some(throughput(r))),
            med(t, |r| Some(throughput(r))),
        );
        let (p50o, p50t) = (med(o, |r| Some(r.p50_ms)), med(t, |r| Some(r.p50_ms)));
        let (p99o, p99t) = (med(o, |r| Some(r.p99_ms)), med(t, |r| Some(r.p99_ms)));
        let (co, ct) = (med(o, |r| r.cpu_ms_per_op), med(t, |r| r.cpu_ms_per_op));
        let mut reps = per_rep_ratios(o, t);
        reps.sort_by(f64::total_cmp);
        let range = match (reps.first(), reps.last()) {
            (Some(a), Some(b)) => format!("{}–{}", num(Some(*a)), num(Some(*b))),
            _ => "–".to_owned(),
        };
        let errors: u64 = both.iter().map(|r| r.errors).sum();
        let flag = if errors > 0 {
            format!(" ({errors} errors!)")
        } else {
            String::new()
        };
        let _ = writeln!(
            md,
            "| {scenario}{flag} | {} | {} | {} | {} | {range} | {} / {} | {} / {} | {} | {} / {} | {} |",
            unit(scenario, &both),
            num(to),
            num(tt),
            times(ratio(to, tt)),
            num(p50o),
            num(p50t),
            num(p99o),
            num(p99t),
            times(ratio(p99o, p99t)),
            num(co),
            num(ct),
            times(ratio(co, ct)),
        );
    }

    let (ro, rt) = (peak_rss(lines, ours), peak_rss(lines, theirs));
    let rss_ratio = ratio(ro, rt);
    let _ = writeln!(
        md,
        "\n| process | peak RSS (VmHWM, MiB), median over reps |\n|---|---|\n| ours | {} |\n| {theirs} | {} |\n| ratio ours/{theirs} ↓ | {} |",
        num(ro.map(|k| k / 1024.0)),
        num(rt.map(|k| k / 1024.0)),
        times(rss_ratio),
    );

    let _ = writeln!(md, "\n| target | measured | met? |\n|---|---|---|");
    for target in TARGETS {
        let Some((_, by_server)) = grouped.iter().find(|(s, _)| s == target.scenario) else {
            let _ = writeln!(
                md,
                "| {} ≥ {}x | not run | – |",
                target.scenario, target.min_ratio
            );
            continue;
        };
        let o = by_server.get(ours).unwrap_or(&empty);
        let t = by_server.get(theirs).unwrap_or(&empty);
        let r = ratio(
            med(o, |r| Some(throughput(r))),
            med(t, |r| Some(throughput(r))),
        );
        let p99 = med(o, |r| Some(r.p99_ms));
        let mut met = r.is_some_and(|r| r >= target.min_ratio);
        let mut measured = times(r);
        let mut name = format!("{} ≥ {}x", target.scenario, target.min_ratio);
        if let Some(max) = target.max_p99_ms {
            met = met && p99.is_some_and(|p| p < max);
            measured = format!("{measured}, p99 {} ms", num(p99));
            name = format!("{name}, p99 < {max} ms");
        }
        let _ = writeln!(
            md,
            "| {name} | {measured} | {} |",
            if met { "met" } else { "MISSED" }
        );
    }
    let _ = writeln!(
        md,
        "| peak RSS ≤ {RSS_TARGET}x | {} | {} |",
        times(rss_ratio),
        if rss_ratio.is_some_and(|r| r <= RSS_TARGET) {
            "met"
        } else {
            "MISSED"
        }
    );

    for line in lines {
        if let Line::Sha256(s) = line {
            let _ = writeln!(
                md,
                "\nClient sha256 self-check (sha2 0.11, release): {:.2} GiB/s over {} MiB; CPU has SHA-NI: {}.",
                s.gib_per_s, s.mib_hashed, s.cpu_has_sha_ni
            );
            break;
        }
    }
    md
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::ProcessReading;

    fn result(scenario: &str, server: &str, rep: u32, ops_per_s: f64, p99: f64) -> Line {
        Line::Result(ScenarioResult {
            scenario: scenario.into(),
            server: server.into(),
            rep,
            ops: 10,
            ops_per_s,
            p99_ms: p99,
            server_rss_hwm_kib: Some(1024),
            ..Default::default()
        })
    }

    #[test]
    fn medians_ratios_and_targets() {
        let mut lines = Vec::new();
        for rep in 1..=3 {
            lines.push(result(
                "manifest_get",
                "ours",
                rep,
                12_000.0 + f64::from(rep),
                2.0,
            ));
            lines.push(result("manifest_get", "distribution", rep, 1000.0, 9.0));
            lines.push(result("push_mono_c1", "ours", rep, 1.0, 900.0));
            lines.push(result("push_mono_c1", "distribution", rep, 1.0, 900.0));
            lines.push(Line::Process(ProcessReading {
                server: "distribution".into(),
                rep,
                pid: 1,
                rss_hwm_kib: 10 * 1024,
                rss_kib: 1,
                cpu_s_total: 1.0,
            }));
        }
        let md = render(&lines, "ours", "distribution");
        assert!(
            md.contains("| manifest_get | req/s | 12002 | 1000 | 12.00x |"),
            "{md}"
        );
        assert!(
            md.contains("| manifest_get ≥ 12x, p99 < 5 ms | 12.00x, p99 2.00 ms | met |"),
            "{md}"
        );
        assert!(
            md.contains("| push_mono_c1 ≥ 2x | 1.00x | MISSED |"),
            "{md}"
        );
        assert!(md.contains("| catalog_10k ≥ 300x | not run | – |"), "{md}");
        assert!(
            md.contains("| ratio ours/distribution ↓ | 0.100x |"),
            "{md}"
        );
        assert!(md.contains("| peak RSS ≤ 0.4x | 0.100x | met |"), "{md}");
    }

    #[test]
    fn parses_only_json_lines() {
        let text = "garbage\n{\"kind\":\"sha256\",\"gib_per_s\":1.5,\"mib_hashed\":256,\"cpu_has_sha_ni\":true}\n";
        let lines = parse_lines(text).unwrap();
        assert_eq!(lines.len(), 1);
        assert!(parse_lines("{not json").is_err());
    }
}
