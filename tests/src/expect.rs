//! Assertions for check bodies: each returns `Err(reason)` instead of panicking.

use crate::client::Resp;
use crate::report::Check;

/// Fails with `msg` unless `cond` holds.
pub(crate) fn ensure(cond: bool, msg: impl FnOnce() -> String) -> Check {
    if cond { Ok(()) } else { Err(msg()) }
}

/// The status is one of `allowed`, and the response is well-formed HTTP.
pub(crate) fn status(resp: &Resp, allowed: &[u16]) -> Check {
    ensure(allowed.contains(&resp.status), || {
        let want: Vec<String> = allowed.iter().map(u16::to_string).collect();
        format!(
            "expected status {}, got {}",
            want.join(" or "),
            resp.describe()
        )
    })?;
    match &resp.body_error {
        // A body shorter than its Content-Length desynchronises keep-alive connections.
        Some(e) => Err(format!(
            "status {} as expected, but the response is malformed (Content-Length: {}): {e}",
            resp.status,
            resp.header("Content-Length").unwrap_or("none"),
        )),
        None => Ok(()),
    }
}

/// A header that must be present; returns its value.
pub(crate) fn header<'a>(resp: &'a Resp, name: &str) -> Result<&'a str, String> {
    resp.header(name)
        .ok_or_else(|| format!("{} is missing the {name} header", resp.describe()))
}

/// A header that must be present with exactly `want`.
pub(crate) fn header_eq(resp: &Resp, name: &str, want: &str) -> Check {
    let got = header(resp, name)?;
    ensure(got == want, || {
        format!("{} has {name}: {got:?}, expected {want:?}", resp.describe())
    })
}

/// A header that, when present, must equal `want`.
pub(crate) fn optional_header_eq(resp: &Resp, name: &str, want: &str) -> Check {
    match resp.header(name) {
        Some(_) => header_eq(resp, name, want),
        None => Ok(()),
    }
}

/// The status is one of `allowed` and the OCI error body carries `code`.
pub(crate) fn error(resp: &Resp, allowed: &[u16], code: &str) -> Check {
    status(resp, allowed)?;
    if resp.method == reqwest::Method::HEAD {
        return Ok(());
    }
    let codes = resp.error_codes();
    ensure(codes.iter().any(|c| c == code), || {
        format!(
            "expected error code {code}, got {} (codes: {codes:?})",
            resp.describe()
        )
    })
}

/// The body is exactly `want`.
pub(crate) fn body_eq(resp: &Resp, want: &[u8]) -> Check {
    ensure(resp.body.as_ref() == want, || {
        format!(
            "{} body differs from what was pushed ({} bytes, expected {} bytes)",
            resp.describe(),
            resp.body.len(),
            want.len()
        )
    })
}
