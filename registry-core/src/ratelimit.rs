//! Rate limits per caller, as Docker Hub has them: manifest pulls (`GET`/`HEAD` of a
//! manifest) and writes (any other method than `GET`/`HEAD`) each have their own budget, kept
//! per authenticated user, and per client address for anonymous callers (an IPv6 client
//! per /64, which is what one host usually holds; with no address known, anonymous callers
//! share one budget). A refusal is `429 TOOMANYREQUESTS` with `Retry-After`; manifest pulls
//! carry `RateLimit-Limit` and `RateLimit-Remaining` in Docker Hub's spelling
//! (`100;w=21600`: requests, and the window in seconds).
//!
//! The auth layer asks once the principal is known; the decision reads the decoded
//! [`ApiRequest`] and the [`Principal`], never the URI. Buckets are governor's GCRA: a
//! limit of N per period lets a burst of N through and then one more every period / N.

use std::net::{IpAddr, Ipv6Addr};
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use governor::clock::{Clock, DefaultClock};
use governor::middleware::StateInformationMiddleware;
use governor::state::keyed::DashMapStateStore;
use governor::{Quota, RateLimiter};
use http::{HeaderMap, HeaderName, HeaderValue};

use crate::auth::Principal;
use crate::error::RegistryError;
use crate::request::ApiRequest;
use crate::route::Route;

/// At most `count` requests per `period` (a burst of `count`, then one every
/// `period / count`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    count: NonZeroU32,
    period: Duration,
}

impl RateLimit {
    /// `None` when `count` or `period` is zero.
    pub fn new(count: u32, period: Duration) -> Option<RateLimit> {
        let count = NonZeroU32::new(count)?;
        (!period.is_zero()).then_some(RateLimit { count, period })
    }

    /// Requests allowed per period (the burst).
    pub fn count(&self) -> u32 {
        self.count.get()
    }

    /// The period.
    pub fn period(&self) -> Duration {
        self.period
    }

    /// The window of the `RateLimit-*` headers: the period in whole seconds, at least 1.
    fn window_secs(&self) -> u64 {
        ceil_secs(self.period).max(1)
    }

    /// `RateLimit-Limit`: `100;w=21600`.
    fn limit_header(&self) -> HeaderValue {
        header_value(self.count(), self.window_secs())
    }

    fn quota(&self) -> Quota {
        let per_cell = (self.period / self.count.get()).max(Duration::from_nanos(1));
        Quota::with_period(per_cell)
            .unwrap_or_else(|| Quota::per_second(self.count))
            .allow_burst(self.count)
    }
}

/// Which requests are limited (none by default).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RateLimits {
    /// Manifest `GET`s and `HEAD`s.
    pub pulls: Option<RateLimit>,
    /// Every request other than a `GET` or `HEAD`.
    pub writes: Option<RateLimit>,
}

impl RateLimits {
    /// Sets [`RateLimits::pulls`].
    #[must_use]
    pub fn with_pulls(mut self, limit: Option<RateLimit>) -> Self {
        self.pulls = limit;
        self
    }

    /// Sets [`RateLimits::writes`].
    #[must_use]
    pub fn with_writes(mut self, limit: Option<RateLimit>) -> Self {
        self.writes = limit;
        self
    }
}

/// Whose budget a request spends.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Key {
    User(String),
    Address(IpAddr),
    /// Anonymous, and the server did not say from where.
    Anonymous,
}

impl Key {
    fn of(principal: &Principal, peer: Option<IpAddr>) -> Key {
        match (&principal.name, peer) {
            (Some(name), _) => Key::User(name.clone()),
            (None, Some(ip)) => Key::Address(match ip.to_canonical() {
                IpAddr::V6(v6) => IpAddr::V6(Ipv6Addr::from(v6.to_bits() & !((1u128 << 64) - 1))),
                v4 => v4,
            }),
            (None, None) => Key::Anonymous,
        }
    }
}

type Limiter = RateLimiter<Key, DashMapStateStore<Key>, DefaultClock, StateInformationMiddleware>;

/// How often idle keys are dropped, so the keyed state holds only callers seen lately.
const SWEEP_EVERY: Duration = Duration::from_secs(30);

struct Bucket {
    limit: RateLimit,
    /// The same on every response: made once.
    limit_header: HeaderValue,
    limiter: Limiter,
    started: Instant,
    /// Milliseconds after `started` of the last sweep.
    last_sweep_ms: AtomicU64,
}

impl Bucket {
    fn new(limit: RateLimit) -> Bucket {
        Bucket {
            limit,
            limit_header: limit.limit_header(),
            limiter: RateLimiter::dashmap(limit.quota()).with_middleware(),
            started: Instant::now(),
            last_sweep_ms: AtomicU64::new(0),
        }
    }

    /// `Ok(remaining)`, or `Err(wait)`.
    fn take(&self, key: &Key) -> Result<u32, Duration> {
        let outcome = self.limiter.check_key(key);
        self.sweep_now_and_then();
        match outcome {
            Ok(state) => Ok(state.remaining_burst_capacity()),
            Err(not_until) => Err(not_until.wait_time_from(self.limiter.clock().now())),
        }
    }

    fn sweep_now_and_then(&self) {
        let now = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        let last = self.last_sweep_ms.load(Ordering::Relaxed);
        if now.saturating_sub(last) < SWEEP_EVERY.as_millis() as u64 {
            return;
        }
        // One request per interval does the sweep; the others go on.
        if self
            .last_sweep_ms
            .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
        {
            self.limiter.retain_recent();
            self.limiter.shrink_to_fit();
        }
    }
}

/// The limiters of one registry.
pub(crate) struct Limiters {
    pulls: Option<Bucket>,
    writes: Option<Bucket>,
}

impl std::fmt::Debug for Limiters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Limiters")
            .field("pulls", &self.pulls.as_ref().map(|b| b.limit))
            .field("writes", &self.writes.as_ref().map(|b| b.limit))
            .finish()
    }
}

/// The `RateLimit-*` headers a pull's response carries.
#[derive(Debug)]
pub(crate) struct PullHeaders {
    limit: HeaderValue,
    remaining: HeaderValue,
}

impl PullHeaders {
    fn new(bucket: &Bucket, remaining: u32) -> PullHeaders {
        PullHeaders {
            limit: bucket.limit_header.clone(),
            remaining: header_value(remaining, bucket.limit.window_secs()),
        }
    }

    pub(crate) fn apply(self, headers: &mut HeaderMap) {
        headers.insert(RATELIMIT_LIMIT, self.limit);
        headers.insert(RATELIMIT_REMAINING, self.remaining);
    }
}

/// `N;w=SECONDS`: digits, `;` and `=` only, always a valid header value. Built on the
/// stack: `format!` was half of what the limits cost a manifest GET (callgrind).
fn header_value(n: u32, window_secs: u64) -> HeaderValue {
    let mut out = [0u8; 48];
    let mut len = 0;
    let mut digits = itoa::Buffer::new();
    for part in [digits.format(n).as_bytes(), b";w="] {
        out[len..len + part.len()].copy_from_slice(part);
        len += part.len();
    }
    let window = digits.format(window_secs).as_bytes();
    out[len..len + window.len()].copy_from_slice(window);
    len += window.len();
    HeaderValue::from_bytes(&out[..len]).unwrap_or_else(|_| HeaderValue::from_static("0"))
}

const RATELIMIT_LIMIT: HeaderName = HeaderName::from_static("ratelimit-limit");
const RATELIMIT_REMAINING: HeaderName = HeaderName::from_static("ratelimit-remaining");

/// The `429` of a refused request: `Retry-After` in whole seconds (rounded up), and the pull
/// headers with nothing remaining when a pull was refused.
pub(crate) fn refusal_headers(
    retry_after: Duration,
    pull_limit: Option<RateLimit>,
    headers: &mut HeaderMap,
) {
    headers.insert(
        http::header::RETRY_AFTER,
        HeaderValue::from(retry_after_secs(retry_after)),
    );
    if let Some(limit) = pull_limit {
        headers.insert(RATELIMIT_LIMIT, limit.limit_header());
        headers.insert(RATELIMIT_REMAINING, header_value(0, limit.window_secs()));
    }
}

/// What `Retry-After` says: whole seconds, rounded up, at least 1.
pub(crate) fn retry_after_secs(wait: Duration) -> u64 {
    ceil_secs(wait).max(1)
}

fn ceil_secs(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

impl Limiters {
    pub(crate) fn new(limits: &RateLimits) -> Limiters {
        Limiters {
            pulls: limits.pulls.map(Bucket::new),
            writes: limits.writes.map(Bucket::new),
        }
    }

    /// Spends one request of the caller's budget for this kind of request. `Ok(Some)`: a
    /// pull, with the headers its response carries.
    pub(crate) fn check(
        &self,
        api: &ApiRequest,
        principal: &Principal,
        peer: Option<IpAddr>,
    ) -> Result<Option<PullHeaders>, RegistryError> {
        let pull = matches!(api.route, Route::Manifest(..)) && api.is_read();
        let bucket = match (pull, api.is_read()) {
            (true, _) => self.pulls.as_ref(),
            (false, false) => self.writes.as_ref(),
            (false, true) => None,
        };
        let Some(bucket) = bucket else {
            return Ok(None);
        };
        match bucket.take(&Key::of(principal, peer)) {
            Ok(remaining) => Ok(pull.then(|| PullHeaders::new(bucket, remaining))),
            Err(wait) => Err(RegistryError::RateLimited {
                retry_after: wait,
                pull_limit: pull.then_some(bucket.limit),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv6_callers_share_their_64_and_ipv4_mapped_is_ipv4() {
        let anon = Principal::anonymous();
        let ip = |s: &str| Some(s.parse::<IpAddr>().unwrap());
        let key = |s| Key::of(&anon, ip(s));
        assert_eq!(key("2001:db8:1:2::1"), key("2001:db8:1:2:ffff::9"));
        assert_ne!(key("2001:db8:1:2::1"), key("2001:db8:1:3::1"));
        assert_eq!(key("::ffff:10.0.0.1"), key("10.0.0.1"));
        assert_ne!(key("10.0.0.1"), key("10.0.0.2"));
        assert_eq!(
            Key::of(&Principal::user("alice"), ip("10.0.0.1")),
            Key::User("alice".into())
        );
    }

    #[test]
    fn headers_use_docker_hubs_spelling_and_retry_after_rounds_up() {
        let limit = RateLimit::new(100, Duration::from_secs(21600)).unwrap();
        let mut h = HeaderMap::new();
        refusal_headers(Duration::from_millis(1200), Some(limit), &mut h);
        assert_eq!(h["retry-after"], "2");
        assert_eq!(h["ratelimit-limit"], "100;w=21600");
        assert_eq!(h["ratelimit-remaining"], "0;w=21600");
        assert_eq!(
            header_value(u32::MAX, u64::MAX),
            "4294967295;w=18446744073709551615"
        );
    }
}
