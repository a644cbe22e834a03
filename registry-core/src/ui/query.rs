//! The query parameters of the UI's lists, decoded once and checked: a malformed value
//! is a `400` that says what was wrong, never a 500.

use crate::error::RegistryError;

/// Default and largest page sizes.
pub(super) const DEFAULT_N: usize = 50;
pub(super) const MAX_N: usize = 500;
/// Longest search text (a repository name is at most 255 characters).
const MAX_SEARCH: usize = 255;

/// The order of the repositories list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Sort {
    Name,
    LastPush,
    /// Largest attributed bytes first (as `/ui/storage` ranks them).
    Size,
}

impl Sort {
    pub(super) fn as_str(self) -> &'static str {
        match self {
            Sort::Name => "name",
            Sort::LastPush => "last_push",
            Sort::Size => "size",
        }
    }
}

/// `?q=&sort=&after=&n=`, each at most once; unknown keys are ignored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct ListQuery {
    /// Names containing this, lowercased (repository names are lowercase).
    pub(super) q: String,
    pub(super) sort: Sort,
    /// The previous page's cursor: a name, `<millis>,<name>` for `last_push`, or
    /// `<bytes>,<name>` for `size`.
    pub(super) after: Option<String>,
    pub(super) n: usize,
    /// What was just deleted, for the notice on the page the deletion returns to.
    pub(super) deleted: Option<String>,
}

impl ListQuery {
    pub(super) fn parse(query: Option<&str>) -> Result<ListQuery, RegistryError> {
        let mut out = ListQuery {
            q: String::new(),
            sort: Sort::Name,
            after: None,
            n: DEFAULT_N,
            deleted: None,
        };
        let mut seen: Vec<String> = Vec::new();
        for (key, value) in form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
            if !matches!(&*key, "q" | "sort" | "after" | "n" | "deleted") {
                continue;
            }
            if seen.iter().any(|k| *k == key) {
                return Err(bad(format!("{key:?} is given more than once")));
            }
            seen.push(key.to_string());
            match &*key {
                "q" if value.len() > MAX_SEARCH => {
                    return Err(bad(format!(
                        "the search text is longer than {MAX_SEARCH} characters"
                    )));
                }
                "q" => out.q = value.trim().to_lowercase(),
                "sort" => {
                    out.sort = match &*value {
                        "name" => Sort::Name,
                        "last_push" => Sort::LastPush,
                        "size" => Sort::Size,
                        other => {
                            return Err(bad(format!(
                                "unknown sort {other:?}: use name, last_push or size"
                            )));
                        }
                    }
                }
                "after" if value.is_empty() => {}
                "after" => out.after = Some(value.into_owned()),
                "n" => {
                    out.n = match value.parse::<usize>() {
                        Ok(n) if (1..=MAX_N).contains(&n) => n,
                        _ => {
                            return Err(bad(format!(
                                "the page size n must be a number from 1 to {MAX_N}, not {value:?}"
                            )));
                        }
                    }
                }
                "deleted" => out.deleted = Some(value.into_owned()),
                _ => {}
            }
        }
        Ok(out)
    }

    /// The cursor of a `last_push` order: `(millis or none, name)`.
    pub(super) fn push_cursor(&self) -> Result<Option<(Option<i64>, String)>, RegistryError> {
        self.after
            .as_deref()
            .map(|a| {
                crate::handlers::insights::parse_cursor(a)
                    .map_err(|_| bad(format!("invalid page cursor {a:?}")))
            })
            .transpose()
    }
}

/// The cursor of a `size` order: `(attributed bytes, name)`.
pub(super) fn size_cursor(after: &str) -> Result<(u64, String), RegistryError> {
    after
        .split_once(',')
        .and_then(|(bytes, name)| Some((bytes.parse().ok()?, name.to_string())))
        .ok_or_else(|| bad(format!("invalid page cursor {after:?}")))
}

fn bad(message: String) -> RegistryError {
    RegistryError::InvalidParameter(message)
}

/// `key=value&…`, form-encoded.
pub(super) fn encode(pairs: &[(&str, &str)]) -> String {
    let mut out = form_urlencoded::Serializer::new(String::new());
    for (k, v) in pairs {
        if !v.is_empty() {
            out.append_pair(k, v);
        }
    }
    out.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_values() {
        let q = ListQuery::parse(None).unwrap();
        assert_eq!(
            (q.sort, q.n, q.after, q.q.as_str()),
            (Sort::Name, 50, None, "")
        );
        let q = ListQuery::parse(Some("q=team%2F&sort=last_push&after=5,a&n=10&x=1")).unwrap();
        assert_eq!(q.q, "team/");
        assert_eq!(q.sort, Sort::LastPush);
        assert_eq!(q.push_cursor().unwrap(), Some((Some(5), "a".to_string())));
        assert_eq!(q.n, 10);
        let q = ListQuery::parse(Some("sort=size&after=1024,team%2Fapp")).unwrap();
        assert_eq!(q.sort, Sort::Size);
        assert_eq!(
            size_cursor(q.after.as_deref().unwrap()).unwrap(),
            (1024, "team/app".to_string())
        );
        for bad in ["", "x,a", "-1,a", "12"] {
            assert!(size_cursor(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn bad_values_are_refused() {
        for query in [
            "n=0",
            "n=-1",
            "n=99999999999999999999999",
            "n=501",
            "n=x",
            "sort=bytes",
            "q=a&q=b",
        ] {
            assert!(
                matches!(
                    ListQuery::parse(Some(query)),
                    Err(RegistryError::InvalidParameter(_))
                ),
                "{query}"
            );
        }
        let q = ListQuery::parse(Some("sort=last_push&after=garbage")).unwrap();
        assert!(q.push_cursor().is_err());
    }
}
