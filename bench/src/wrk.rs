//! Manifest GET/HEAD load through `wrk`: a C driver with far less per-request overhead than
//! our client, so the server is what is measured. A Lua `done` hook prints the exact
//! percentiles as one parsable line; wrk's own `--latency` table goes to stderr for the log.

use std::io::Write as _;
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, bail};

use crate::scenarios::{Ctx, Timer};
use crate::stats::ScenarioResult;

const MARKER: &str = "BENCHJSON ";

#[derive(Debug, Clone)]
pub struct WrkArgs {
    pub path: String,
    pub method: String,
    pub accept: String,
    pub connections: usize,
    pub threads: usize,
    pub duration_secs: u64,
}

/// The Lua script: sets the method and Accept header, and prints the summary as JSON.
pub fn lua_script(method: &str, accept: &str) -> String {
    format!(
        r#"wrk.method = "{method}"
wrk.headers["Accept"] = "{accept}"
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format('{MARKER}{{"requests":%.0f,"duration_us":%.0f,"p50_us":%.0f,"p99_us":%.0f,"status_errors":%.0f,"socket_errors":%.0f}}\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    e.status, e.connect + e.read + e.write + e.timeout))
end
"#
    )
}

#[derive(Debug, PartialEq, serde::Deserialize)]
pub struct WrkSummary {
    pub requests: f64,
    pub duration_us: f64,
    pub p50_us: f64,
    pub p99_us: f64,
    pub status_errors: f64,
    pub socket_errors: f64,
}

pub fn parse_summary(stdout: &str) -> Result<WrkSummary> {
    let line = stdout
        .lines()
        .find_map(|l| l.strip_prefix(MARKER))
        .context("wrk printed no summary line (is its Lua support there?)")?;
    serde_json::from_str(line).with_context(|| format!("parsing wrk summary {line}"))
}

pub fn run(ctx: &Ctx, scenario: &str, args: &WrkArgs) -> Result<ScenarioResult> {
    let mut script = tempfile::Builder::new()
        .suffix(".lua")
        .tempfile()
        .context("creating the wrk script")?;
    script
        .write_all(lua_script(&args.method, &args.accept).as_bytes())
        .context("writing the wrk script")?;
    let url = ctx.registry.url(&args.path)?;
    let timer = Timer::start(ctx.proc)?;
    let out = Command::new("wrk")
        .arg("--latency")
        .arg(format!("-t{}", args.threads))
        .arg(format!("-c{}", args.connections))
        .arg(format!("-d{}s", args.duration_secs))
        .arg("--timeout")
        .arg("10s")
        .arg("-s")
        .arg(script.path())
        .arg(url.as_str())
        .output()
        .context("running wrk (is it installed?)")?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    eprintln!("{stdout}");
    if !out.status.success() {
        bail!(
            "wrk failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let s = parse_summary(&stdout)?;
    if s.requests == 0.0 {
        bail!("wrk completed no request in {}s", args.duration_secs);
    }
    let secs = Duration::from_micros(s.duration_us as u64).as_secs_f64();
    let mut r = ScenarioResult {
        scenario: scenario.to_owned(),
        server: ctx.server.clone(),
        rep: ctx.rep,
        ops: s.requests as u64,
        secs,
        ops_per_s: s.requests / secs,
        p50_ms: s.p50_us / 1000.0,
        p99_ms: s.p99_us / 1000.0,
        errors: (s.status_errors + s.socket_errors) as u64,
        ..Default::default()
    };
    timer.add_server_usage(&mut r)?;
    r.extra
        .insert("connections".into(), args.connections.into());
    r.extra.insert("threads".into(), args.threads.into());
    r.extra.insert("method".into(), args.method.clone().into());
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_done_hook_line() {
        let out = "Running 10s test @ http://x\n  Latency Distribution\n     50%  1.00ms\nBENCHJSON {\"requests\":1000,\"duration_us\":10000000,\"p50_us\":950,\"p99_us\":4100,\"status_errors\":0,\"socket_errors\":2}\n";
        let s = parse_summary(out).unwrap();
        assert_eq!(s.requests, 1000.0);
        assert_eq!(s.p99_us, 4100.0);
        assert_eq!(s.socket_errors, 2.0);
        assert!(parse_summary("no marker").is_err());
    }

    #[test]
    fn script_sets_method_and_accept() {
        let s = lua_script("HEAD", "application/vnd.oci.image.manifest.v1+json");
        assert!(s.contains(r#"wrk.method = "HEAD""#));
        assert!(s.contains("vnd.oci.image.manifest.v1+json"));
        assert!(s.contains("BENCHJSON {\"requests\""));
    }
}
