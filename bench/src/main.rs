//! `registry-bench`: a load benchmark that drives any running registry over HTTP and prints
//! one JSON line per measured scenario (throughput, p50/p99 latency, and with `--server-pid`
//! the server's CPU time and peak RSS during the timed part).
//!
//! `scripts/bench-vs-distribution.sh` runs it against our `registry` and CNCF distribution
//! side by side and renders the comparison with `registry-bench report`; see
//! `docs/performance.md`. By hand:
//!
//! ```text
//! cargo build --release -p registry-bench
//! target/release/registry-bench --url http://127.0.0.1:5000 --server-pid $PID push --blobs 4
//! target/release/registry-bench report results.jsonl
//! ```

mod client;
mod content;
mod procstat;
mod report;
mod scenarios;
mod stats;
mod wrk;

use std::io::Write as _;
use std::time::Instant;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use sha2::{Digest as _, Sha256};

use crate::client::Registry;
use crate::procstat::Proc;
use crate::scenarios::Ctx;
use crate::stats::{Line, ProcessReading, ShaCheck};

#[derive(Debug, Parser)]
#[command(name = "registry-bench", about = "Load benchmark for OCI registries.")]
struct Cli {
    /// Registry base URL.
    #[arg(long, global = true, default_value = "http://127.0.0.1:5000")]
    url: String,
    /// PID of the server process, to read its CPU time and VmHWM from /proc.
    #[arg(long, global = true)]
    server_pid: Option<u32>,
    /// Label of the server in the output.
    #[arg(long, global = true, default_value = "server")]
    server: String,
    /// Repetition number, copied into the output.
    #[arg(long, global = true, default_value_t = 1)]
    rep: u32,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Client-side sha256 throughput and whether the CPU has SHA-NI.
    Sha256 {
        #[arg(long, default_value_t = 512)]
        mib: usize,
    },
    /// Blob push: monolithic (POST + PUT ?digest=), or chunked with --chunk-mib.
    Push {
        #[arg(long, default_value = "push_mono_c1")]
        scenario: String,
        #[arg(long, default_value = "bench/push")]
        repo: String,
        #[arg(long, default_value_t = 64)]
        blob_mib: usize,
        #[arg(long, default_value_t = 8)]
        blobs: usize,
        #[arg(long, default_value_t = 1)]
        concurrency: usize,
        #[arg(long)]
        chunk_mib: Option<usize>,
    },
    /// Blob pull: pushes --distinct blobs untimed, then GETs them --pulls times.
    Pull {
        #[arg(long, default_value = "pull_c4")]
        scenario: String,
        #[arg(long, default_value = "bench/pull")]
        repo: String,
        #[arg(long, default_value_t = 64)]
        blob_mib: usize,
        #[arg(long, default_value_t = 4)]
        distinct: usize,
        #[arg(long, default_value_t = 16)]
        pulls: usize,
        #[arg(long, default_value_t = 4)]
        concurrency: usize,
    },
    /// Manifest PUT throughput: mounts the small image into repositories start..start+repos
    /// (untimed), then PUTs --tags manifests per repository (timed).
    Populate {
        #[arg(long, default_value = "manifest_put_1k")]
        scenario: String,
        #[arg(long, default_value_t = 0)]
        start: usize,
        #[arg(long, default_value_t = 1000)]
        repos: usize,
        #[arg(long, default_value_t = 5)]
        tags: usize,
        #[arg(long, default_value_t = 8)]
        concurrency: usize,
    },
    /// Full `_catalog` walks following Link headers.
    Catalog {
        #[arg(long, default_value = "catalog_1k")]
        scenario: String,
        #[arg(long, default_value_t = 100)]
        n: usize,
        /// Fail unless a walk sees at least this many repositories.
        #[arg(long, default_value_t = 0)]
        expect: usize,
        #[arg(long, default_value_t = 1)]
        min_walks: usize,
        #[arg(long, default_value_t = 50)]
        max_walks: usize,
        #[arg(long, default_value_t = 2.0)]
        min_secs: f64,
    },
    /// `tags/list` of a repository with --tags tags (pushed untimed if missing).
    TagsList {
        #[arg(long, default_value = "tags_list_1k")]
        scenario: String,
        #[arg(long, default_value = "bench/tags")]
        repo: String,
        #[arg(long, default_value_t = 1000)]
        tags: usize,
        #[arg(long, default_value_t = 200)]
        requests: usize,
        #[arg(long, default_value_t = 1)]
        concurrency: usize,
    },
    /// Pushes the small image as REPO:TAG (setup for `wrk`).
    SetupManifest {
        #[arg(long, default_value = "bench/wrk")]
        repo: String,
        #[arg(long, default_value = "latest")]
        tag: String,
    },
    /// Manifest GET or HEAD load through wrk.
    Wrk {
        #[arg(long, default_value = "manifest_get")]
        scenario: String,
        #[arg(long, default_value = "/v2/bench/wrk/manifests/latest")]
        path: String,
        #[arg(long, default_value = "GET")]
        method: String,
        #[arg(long, default_value = content::OCI_MANIFEST)]
        accept: String,
        #[arg(long, default_value_t = 32)]
        connections: usize,
        #[arg(long, default_value_t = 2)]
        threads: usize,
        #[arg(long, default_value_t = 10)]
        duration: u64,
    },
    /// Time-bounded GET or HEAD load from our own client (for HEAD, which wrk cannot do).
    Load {
        #[arg(long, default_value = "manifest_head")]
        scenario: String,
        #[arg(long, default_value = "/v2/bench/wrk/manifests/latest")]
        path: String,
        #[arg(long, default_value = "HEAD")]
        method: String,
        #[arg(long, default_value = content::OCI_MANIFEST)]
        accept: String,
        #[arg(long, default_value_t = 32)]
        concurrency: usize,
        #[arg(long, default_value_t = 10)]
        duration: u64,
    },
    /// Whole-process CPU time and VmHWM of --server-pid.
    Proc,
    /// Renders JSON-lines files of a comparison run as Markdown tables.
    Report {
        files: Vec<std::path::PathBuf>,
        #[arg(long, default_value = "ours")]
        ours: String,
        #[arg(long, default_value = "distribution")]
        theirs: String,
    },
}

fn emit(line: &Line) -> Result<()> {
    let text = serde_json::to_string(line).context("encoding a result")?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "{text}").context("writing to stdout")?;
    out.flush().context("flushing stdout")
}

fn sha256_check(mib: usize) -> ShaCheck {
    let data = content::random_bytes(42, mib * 1024 * 1024);
    let t = Instant::now();
    let digest = Sha256::digest(&data);
    let secs = t.elapsed().as_secs_f64();
    std::hint::black_box(digest);
    ShaCheck {
        gib_per_s: mib as f64 / 1024.0 / secs,
        mib_hashed: mib as u64,
        cpu_has_sha_ni: cpu_has_sha_ni(),
    }
}

#[cfg(any(target_arch = "x86", target_arch = "x86_64"))]
fn cpu_has_sha_ni() -> bool {
    std::arch::is_x86_feature_detected!("sha")
        && std::arch::is_x86_feature_detected!("sse4.1")
        && std::arch::is_x86_feature_detected!("ssse3")
}

#[cfg(not(any(target_arch = "x86", target_arch = "x86_64")))]
fn cpu_has_sha_ni() -> bool {
    false
}

#[tokio::main]
async fn main() -> Result<()> {
    let cli = Cli::parse();
    let ctx = Ctx {
        registry: Registry::new(&cli.url)?,
        server: cli.server.clone(),
        rep: cli.rep,
        proc: cli.server_pid.map(Proc::new),
    };
    let result = match cli.command {
        Cmd::Sha256 { mib } => return emit(&Line::Sha256(sha256_check(mib))),
        Cmd::Proc => {
            let p = ctx.proc.context("proc needs --server-pid")?;
            let (rss_hwm_kib, rss_kib) = p.memory_kib()?;
            return emit(&Line::Process(ProcessReading {
                server: ctx.server,
                rep: ctx.rep,
                pid: p.pid,
                rss_hwm_kib,
                rss_kib,
                cpu_s_total: p.cpu_seconds()?,
            }));
        }
        Cmd::Report {
            files,
            ours,
            theirs,
        } => {
            let mut lines = Vec::new();
            for f in &files {
                let text = std::fs::read_to_string(f)
                    .with_context(|| format!("reading {}", f.display()))?;
                lines.extend(report::parse_lines(&text).with_context(|| f.display().to_string())?);
            }
            print!("{}", report::render(&lines, &ours, &theirs));
            return Ok(());
        }
        Cmd::SetupManifest { repo, tag } => {
            return scenarios::setup_manifest(&ctx.registry, &repo, &tag).await;
        }
        Cmd::Push {
            scenario,
            repo,
            blob_mib,
            blobs,
            concurrency,
            chunk_mib,
        } => {
            scenarios::push(
                &ctx,
                &scenario,
                &repo,
                blob_mib,
                blobs,
                concurrency,
                chunk_mib,
            )
            .await?
        }
        Cmd::Pull {
            scenario,
            repo,
            blob_mib,
            distinct,
            pulls,
            concurrency,
        } => {
            scenarios::pull(
                &ctx,
                &scenario,
                &repo,
                blob_mib,
                distinct,
                pulls,
                concurrency,
            )
            .await?
        }
        Cmd::Populate {
            scenario,
            start,
            repos,
            tags,
            concurrency,
        } => scenarios::populate(&ctx, &scenario, start, repos, tags, concurrency).await?,
        Cmd::Catalog {
            scenario,
            n,
            expect,
            min_walks,
            max_walks,
            min_secs,
        } => scenarios::catalog(&ctx, &scenario, n, expect, min_walks, max_walks, min_secs).await?,
        Cmd::TagsList {
            scenario,
            repo,
            tags,
            requests,
            concurrency,
        } => scenarios::tags_list(&ctx, &scenario, &repo, tags, requests, concurrency).await?,
        Cmd::Load {
            scenario,
            path,
            method,
            accept,
            concurrency,
            duration,
        } => {
            scenarios::load(
                &ctx,
                &scenario,
                &method,
                &path,
                &accept,
                concurrency,
                std::time::Duration::from_secs(duration),
            )
            .await?
        }
        Cmd::Wrk {
            scenario,
            path,
            method,
            accept,
            connections,
            threads,
            duration,
        } => {
            let args = wrk::WrkArgs {
                path,
                method,
                accept,
                connections,
                threads,
                duration_secs: duration,
            };
            let ctx = ctx.clone();
            tokio::task::spawn_blocking(move || wrk::run(&ctx, &scenario, &args))
                .await
                .context("wrk task panicked")??
        }
    };
    emit(&Line::Result(result))
}
