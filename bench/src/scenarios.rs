//! The scenarios. Each has an untimed setup (generate content, push what it needs, link
//! blobs into repositories) and a timed part whose operations are counted and whose
//! latencies give p50/p99. Server CPU and peak RSS are read around the timed part only.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};

use crate::client::Registry;
use crate::content::{self, SmallImage};
use crate::procstat::Proc;
use crate::stats::{ScenarioResult, percentile_ms};

const MIB: usize = 1024 * 1024;
/// The repository that holds the small image's blobs; others mount from it.
pub const BASE_REPO: &str = "bench/base";

/// Who is measured and under which labels.
#[derive(Debug, Clone)]
pub struct Ctx {
    pub registry: Registry,
    pub server: String,
    pub rep: u32,
    pub proc: Option<Proc>,
}

/// Runs `jobs` calls of `f(i)` on `concurrency` tasks that each take the next index, and
/// returns each call's latency. Stops at the first error.
pub async fn run_pool<F, Fut>(jobs: usize, concurrency: usize, f: F) -> Result<Vec<Duration>>
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<()>> + Send + 'static,
{
    let f = Arc::new(f);
    let next = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..concurrency.max(1) {
        let f = f.clone();
        let next = next.clone();
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= jobs {
                    break;
                }
                let t = Instant::now();
                if let Err(e) = f(i).await {
                    // Make the other workers stop taking jobs.
                    next.store(jobs, Ordering::Relaxed);
                    return Err(e.context(format!("job {i}")));
                }
                latencies.push(t.elapsed());
            }
            Ok::<_, anyhow::Error>(latencies)
        }));
    }
    let mut all = Vec::with_capacity(jobs);
    for task in tasks {
        all.extend(task.await.context("worker task panicked")??);
    }
    Ok(all)
}

/// Wall clock and server CPU around a timed part.
pub struct Timer {
    proc: Option<Proc>,
    cpu0: Option<f64>,
    t0: Instant,
}

impl Timer {
    pub fn start(proc: Option<Proc>) -> Result<Timer> {
        let cpu0 = proc.map(|p| p.cpu_seconds()).transpose()?;
        Ok(Timer {
            proc,
            cpu0,
            t0: Instant::now(),
        })
    }

    /// Builds the result from the operations' latencies (one per op).
    pub fn finish(
        self,
        ctx: &Ctx,
        scenario: &str,
        latencies: &[Duration],
        bytes: u64,
    ) -> Result<ScenarioResult> {
        let secs = self.t0.elapsed().as_secs_f64();
        let ops = latencies.len() as u64;
        let mut r = ScenarioResult {
            scenario: scenario.to_owned(),
            server: ctx.server.clone(),
            rep: ctx.rep,
            ops,
            bytes,
            secs,
            ops_per_s: ops as f64 / secs,
            mib_per_s: (bytes > 0).then(|| bytes as f64 / MIB as f64 / secs),
            p50_ms: percentile_ms(latencies, 50.0),
            p99_ms: percentile_ms(latencies, 99.0),
            ..Default::default()
        };
        self.add_server_usage(&mut r)?;
        Ok(r)
    }

    pub fn add_server_usage(&self, r: &mut ScenarioResult) -> Result<()> {
        if let (Some(p), Some(cpu0)) = (self.proc, self.cpu0) {
            let cpu = p.cpu_seconds()? - cpu0;
            r.server_cpu_s = Some(cpu);
            if r.ops > 0 {
                r.cpu_ms_per_op = Some(cpu * 1000.0 / r.ops as f64);
            }
            r.server_rss_hwm_kib = Some(p.memory_kib()?.0);
        }
        Ok(())
    }
}

/// Blob push: `blobs` distinct random blobs of `blob_mib` MiB at `concurrency`, monolithic
/// (POST + PUT ?digest=) or, with `chunk_mib`, chunked (POST, PATCHes, empty PUT).
pub async fn push(
    ctx: &Ctx,
    scenario: &str,
    repo: &str,
    blob_mib: usize,
    blobs: usize,
    concurrency: usize,
    chunk_mib: Option<usize>,
) -> Result<ScenarioResult> {
    let content = Arc::new(content::random_blobs(blobs, blob_mib * MIB));
    let bytes: u64 = content.iter().map(|b| b.data.len() as u64).sum();
    let registry = ctx.registry.clone();
    let repo_owned = repo.to_owned();
    let timer = Timer::start(ctx.proc)?;
    let latencies = run_pool(blobs, concurrency, move |i| {
        let registry = registry.clone();
        let content = content.clone();
        let repo = repo_owned.clone();
        async move {
            match chunk_mib {
                Some(c) => registry.push_chunked(&repo, &content[i], c * MIB).await,
                None => registry.push_monolithic(&repo, &content[i]).await,
            }
        }
    })
    .await?;
    let mut r = timer.finish(ctx, scenario, &latencies, bytes)?;
    r.extra.insert("concurrency".into(), concurrency.into());
    r.extra.insert("blob_mib".into(), blob_mib.into());
    if let Some(c) = chunk_mib {
        r.extra.insert("chunk_mib".into(), c.into());
    }
    Ok(r)
}

/// Blob pull: pushes `distinct` blobs (untimed), then GETs them `pulls` times in turn at
/// `concurrency`, reading every byte.
#[allow(clippy::too_many_arguments)]
pub async fn pull(
    ctx: &Ctx,
    scenario: &str,
    repo: &str,
    blob_mib: usize,
    distinct: usize,
    pulls: usize,
    concurrency: usize,
) -> Result<ScenarioResult> {
    let content = content::random_blobs(distinct, blob_mib * MIB);
    for blob in &content {
        ctx.registry.push_monolithic(repo, blob).await?;
    }
    let digests: Arc<Vec<(String, u64)>> = Arc::new(
        content
            .iter()
            .map(|b| (b.digest.clone(), b.data.len() as u64))
            .collect(),
    );
    drop(content);
    let bytes = Arc::new(AtomicU64::new(0));
    let registry = ctx.registry.clone();
    let repo_owned = repo.to_owned();
    let counted = bytes.clone();
    let timer = Timer::start(ctx.proc)?;
    let latencies = run_pool(pulls, concurrency, move |i| {
        let registry = registry.clone();
        let digests = digests.clone();
        let repo = repo_owned.clone();
        let counted = counted.clone();
        async move {
            let (digest, size) = &digests[i % digests.len()];
            let n = registry.pull_blob(&repo, digest).await?;
            ensure!(n == *size, "pulled {n} bytes of {digest}, expected {size}");
            counted.fetch_add(n, Ordering::Relaxed);
            Ok(())
        }
    })
    .await?;
    let mut r = timer.finish(ctx, scenario, &latencies, bytes.load(Ordering::Relaxed))?;
    r.extra.insert("concurrency".into(), concurrency.into());
    r.extra.insert("blob_mib".into(), blob_mib.into());
    Ok(r)
}

/// Pushes the small image's config and layer into [`BASE_REPO`] unless already there.
pub async fn ensure_base(registry: &Registry, image: &SmallImage) -> Result<()> {
    for blob in [&image.config, &image.layer] {
        if !registry.has_blob(BASE_REPO, &blob.digest).await? {
            registry.push_monolithic(BASE_REPO, blob).await?;
        }
    }
    Ok(())
}

pub fn repo_name(i: usize) -> String {
    format!("bench/repo-{i:05}")
}

/// Links the small image's blobs into `repos` (cross-repo mount), at `concurrency`.
pub async fn link_base(
    registry: &Registry,
    image: &Arc<SmallImage>,
    repos: Arc<Vec<String>>,
    concurrency: usize,
) -> Result<()> {
    let registry = registry.clone();
    let image = image.clone();
    run_pool(repos.len(), concurrency, move |i| {
        let registry = registry.clone();
        let image = image.clone();
        let repos = repos.clone();
        async move {
            registry
                .mount_or_push(&repos[i], BASE_REPO, &image.config)
                .await?;
            registry
                .mount_or_push(&repos[i], BASE_REPO, &image.layer)
                .await
        }
    })
    .await?;
    Ok(())
}

/// Manifest PUT throughput: repositories `start..start+repos` get their blobs mounted
/// (untimed), then `tags` distinct manifests each, PUT by tag at `concurrency` (timed).
pub async fn populate(
    ctx: &Ctx,
    scenario: &str,
    start: usize,
    repos: usize,
    tags: usize,
    concurrency: usize,
) -> Result<ScenarioResult> {
    let image = Arc::new(SmallImage::new());
    ensure_base(&ctx.registry, &image).await?;
    let names: Arc<Vec<String>> = Arc::new((start..start + repos).map(repo_name).collect());
    let setup = Instant::now();
    link_base(&ctx.registry, &image, names.clone(), concurrency).await?;
    let setup_secs = setup.elapsed().as_secs_f64();

    let registry = ctx.registry.clone();
    let timer = Timer::start(ctx.proc)?;
    let latencies = run_pool(repos * tags, concurrency, move |j| {
        let registry = registry.clone();
        let image = image.clone();
        let names = names.clone();
        async move {
            let repo = &names[j / tags];
            let tag = format!("t{}", j % tags);
            let body = image.manifest(&format!("{repo}:{tag}"));
            registry.put_manifest(repo, &tag, body).await
        }
    })
    .await?;
    let mut r = timer.finish(ctx, scenario, &latencies, 0)?;
    r.extra.insert("repositories".into(), repos.into());
    r.extra
        .insert("repositories_total".into(), (start + repos).into());
    r.extra.insert("tags_per_repo".into(), tags.into());
    r.extra.insert("concurrency".into(), concurrency.into());
    r.extra
        .insert("untimed_mount_secs".into(), setup_secs.into());
    Ok(r)
}

/// Full `_catalog` walks with `n` per page, following Link headers, repeated until both
/// `min_walks` walks and `min_secs` seconds are done (at most `max_walks`). Ops are pages.
pub async fn catalog(
    ctx: &Ctx,
    scenario: &str,
    n: usize,
    expect_at_least: usize,
    min_walks: usize,
    max_walks: usize,
    min_secs: f64,
) -> Result<ScenarioResult> {
    let path = format!("/v2/_catalog?n={n}");
    let mut page_latencies = Vec::new();
    let mut walk_secs = Vec::new();
    let mut repositories = 0usize;
    let timer = Timer::start(ctx.proc)?;
    let t0 = Instant::now();
    while walk_secs.len() < max_walks.max(1)
        && (walk_secs.len() < min_walks || t0.elapsed().as_secs_f64() < min_secs)
    {
        let walk = Instant::now();
        let mut url = Some(ctx.registry.url(&path)?);
        let mut seen = 0usize;
        while let Some(u) = url.take() {
            let t = Instant::now();
            let (body, next) = ctx.registry.get_page(u).await?;
            page_latencies.push(t.elapsed());
            let page = body
                .get("repositories")
                .and_then(|v| v.as_array())
                .map(|a| a.len())
                .context("catalog page without a repositories array")?;
            seen += page;
            if page > 0 {
                url = next;
            }
        }
        walk_secs.push(walk.elapsed().as_secs_f64());
        repositories = seen;
    }
    if repositories < expect_at_least {
        bail!("catalog walk saw {repositories} repositories, expected at least {expect_at_least}");
    }
    let mut r = timer.finish(ctx, scenario, &page_latencies, 0)?;
    r.extra.insert("repositories".into(), repositories.into());
    r.extra.insert("walks".into(), walk_secs.len().into());
    r.extra.insert(
        "walk_secs_median".into(),
        crate::stats::median(&walk_secs).unwrap_or(0.0).into(),
    );
    r.extra.insert("page_size".into(), n.into());
    Ok(r)
}

/// `tags/list` of one repository with `tags` tags (pushed untimed unless already there),
/// fetched `requests` times at `concurrency`; each op follows Link headers to the end.
pub async fn tags_list(
    ctx: &Ctx,
    scenario: &str,
    repo: &str,
    tags: usize,
    requests: usize,
    concurrency: usize,
) -> Result<ScenarioResult> {
    let image = Arc::new(SmallImage::new());
    ensure_base(&ctx.registry, &image).await?;
    let path = format!("/v2/{repo}/tags/list");
    let existing = match ctx.registry.walk(&path, "tags").await {
        Ok((t, _)) => t.len(),
        Err(_) => 0,
    };
    if existing < tags {
        link_base(&ctx.registry, &image, Arc::new(vec![repo.to_owned()]), 1).await?;
        let registry = ctx.registry.clone();
        let repo_owned = repo.to_owned();
        run_pool(tags, 8, move |i| {
            let registry = registry.clone();
            let image = image.clone();
            let repo = repo_owned.clone();
            async move {
                let tag = format!("v{i:04}");
                let body = image.manifest(&format!("{repo}:{tag}"));
                registry.put_manifest(&repo, &tag, body).await
            }
        })
        .await?;
    }
    let registry = ctx.registry.clone();
    let timer = Timer::start(ctx.proc)?;
    let latencies = run_pool(requests, concurrency, move |_| {
        let registry = registry.clone();
        let path = path.clone();
        async move {
            let (got, _) = registry.walk(&path, "tags").await?;
            ensure!(
                got.len() >= tags,
                "tags/list returned {} tags, expected {tags}",
                got.len()
            );
            Ok(())
        }
    })
    .await?;
    let mut r = timer.finish(ctx, scenario, &latencies, 0)?;
    r.extra.insert("tags".into(), tags.into());
    r.extra.insert("concurrency".into(), concurrency.into());
    Ok(r)
}

/// Pushes the small image into `repo` and tags it `tag` (for the wrk manifest scenarios).
pub async fn setup_manifest(registry: &Registry, repo: &str, tag: &str) -> Result<()> {
    let image = Arc::new(SmallImage::new());
    ensure_base(registry, &image).await?;
    link_base(registry, &image, Arc::new(vec![repo.to_owned()]), 1).await?;
    registry
        .put_manifest(repo, tag, image.manifest(&format!("{repo}:{tag}")))
        .await
}

/// Time-bounded load of one request (`GET` or `HEAD` of `path` with `accept`) from
/// `concurrency` tasks of our own client. For HEAD, which wrk cannot drive (its HTTP parser
/// waits for a body after `Content-Length`, wg/wrk#198).
pub async fn load(
    ctx: &Ctx,
    scenario: &str,
    method: &str,
    path: &str,
    accept: &str,
    concurrency: usize,
    duration: Duration,
) -> Result<ScenarioResult> {
    let method = reqwest::Method::from_bytes(method.as_bytes())
        .with_context(|| format!("invalid method {method}"))?;
    let url = ctx.registry.url(path)?;
    // Warm the connection pool so connects are not timed.
    ctx.registry
        .request_ok(method.clone(), url.clone(), accept)
        .await?;
    let deadline = Instant::now() + duration;
    let timer = Timer::start(ctx.proc)?;
    let mut tasks = Vec::new();
    for _ in 0..concurrency.max(1) {
        let registry = ctx.registry.clone();
        let (method, url, accept) = (method.clone(), url.clone(), accept.to_owned());
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            while Instant::now() < deadline {
                let t = Instant::now();
                registry
                    .request_ok(method.clone(), url.clone(), &accept)
                    .await?;
                latencies.push(t.elapsed());
            }
            Ok::<_, anyhow::Error>(latencies)
        }));
    }
    let mut latencies = Vec::new();
    for task in tasks {
        latencies.extend(task.await.context("load task panicked")??);
    }
    let mut r = timer.finish(ctx, scenario, &latencies, 0)?;
    r.extra.insert("concurrency".into(), concurrency.into());
    r.extra.insert("method".into(), method.as_str().into());
    r.extra
        .insert("driver".into(), "registry-bench (reqwest)".into());
    Ok(r)
}
