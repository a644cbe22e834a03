//! The pages' templates (askama: compiled into the binary, HTML-escaped by default) and
//! the values they show, already formatted.

use askama::Template;
use http::StatusCode;

/// A link: where, and what it says.
#[derive(Debug, Clone)]
pub(super) struct Link {
    pub(super) href: String,
    pub(super) label: String,
}

#[derive(Debug, Clone)]
pub(super) struct RepoRow {
    pub(super) name: String,
    pub(super) href: String,
    pub(super) last_push: String,
    /// Attributed bytes, when sorted by size.
    pub(super) size: Option<String>,
    pub(super) pulls: u64,
    pub(super) last_pull: String,
}

#[derive(Template)]
#[template(path = "ui/repositories.html")]
pub(super) struct RepositoriesPage {
    pub(super) user: Option<String>,
    /// Whether to offer "Log in" to an anonymous caller.
    pub(super) login: bool,
    pub(super) q: String,
    pub(super) sort: &'static str,
    pub(super) n: usize,
    /// Sorted by size: the rows have a size column.
    pub(super) by_size: bool,
    pub(super) rows: Vec<RepoRow>,
    pub(super) next: Option<String>,
    pub(super) first: Option<String>,
}

#[derive(Debug, Clone)]
pub(super) struct TagRow {
    pub(super) tag: String,
    pub(super) href: String,
    pub(super) digest: String,
    pub(super) short: String,
    pub(super) size: String,
    pub(super) kind: String,
    pub(super) artifact_type: String,
    pub(super) platforms: String,
    pub(super) pushed: String,
    pub(super) pulls: u64,
    pub(super) last_pull: String,
    pub(super) pull_command: String,
    pub(super) delete_href: String,
}

/// A manifest no tag points at (an image of an index, a referrer, or one left behind).
#[derive(Debug, Clone)]
pub(super) struct UntaggedRow {
    pub(super) href: String,
    pub(super) short: String,
    pub(super) digest: String,
    pub(super) size: String,
    pub(super) pushed: String,
    pub(super) pulls: u64,
    pub(super) last_pull: String,
}

#[derive(Template)]
#[template(path = "ui/repository.html")]
pub(super) struct RepositoryPage {
    pub(super) user: Option<String>,
    /// Whether to offer "Log in" to an anonymous caller.
    pub(super) login: bool,
    pub(super) name: String,
    pub(super) href: String,
    /// The tag prefix searched for.
    pub(super) q: String,
    pub(super) may_delete: bool,
    pub(super) notice: Option<String>,
    pub(super) rows: Vec<TagRow>,
    pub(super) next: Option<String>,
    pub(super) first: Option<String>,
    pub(super) untagged: Vec<UntaggedRow>,
    pub(super) untagged_more: bool,
    pub(super) pulls: u64,
    pub(super) last_pull: String,
}

#[derive(Debug, Clone)]
pub(super) struct DescriptorRow {
    pub(super) href: Option<String>,
    pub(super) digest: String,
    pub(super) short: String,
    pub(super) size: String,
    pub(super) media_type: String,
    /// `linux/arm64` for an index's children.
    pub(super) platform: String,
}

#[derive(Debug, Clone)]
pub(super) struct ReferrerRow {
    /// 0 for a direct referrer, 1 for a referrer of a referrer, …
    pub(super) depth: usize,
    pub(super) href: String,
    pub(super) short: String,
    pub(super) kind: String,
    pub(super) artifact_type: String,
    pub(super) size: String,
    pub(super) annotations: String,
}

#[derive(Template)]
#[template(path = "ui/manifest.html")]
pub(super) struct ManifestPage {
    pub(super) user: Option<String>,
    /// Whether to offer "Log in" to an anonymous caller.
    pub(super) login: bool,
    pub(super) repo: String,
    pub(super) repo_href: String,
    pub(super) digest: String,
    pub(super) media_type: String,
    pub(super) kind: String,
    pub(super) artifact_type: String,
    pub(super) size: String,
    pub(super) total_size: String,
    pub(super) tags: Vec<String>,
    pub(super) pull_command: String,
    pub(super) pulls: u64,
    pub(super) last_pull: String,
    pub(super) config: Option<DescriptorRow>,
    pub(super) layers: Vec<DescriptorRow>,
    pub(super) children: Vec<DescriptorRow>,
    pub(super) subject: Option<Link>,
    pub(super) annotations: Vec<(String, String)>,
    pub(super) referrers: Vec<ReferrerRow>,
    pub(super) referrers_truncated: bool,
    pub(super) may_delete: bool,
    pub(super) delete_href: String,
    pub(super) content: String,
}

#[derive(Debug, Clone)]
pub(super) struct SizeRow {
    pub(super) name: String,
    pub(super) href: String,
    pub(super) attributed: String,
    pub(super) unique: String,
    pub(super) shared: String,
    pub(super) manifests: u64,
    pub(super) tags: u64,
}

#[derive(Debug, Clone)]
pub(super) struct BlobRow {
    pub(super) short: String,
    pub(super) digest: String,
    pub(super) size: String,
    pub(super) repositories: u64,
    pub(super) manifests: u64,
}

#[derive(Debug, Clone)]
pub(super) struct CountRow {
    pub(super) label: String,
    pub(super) manifests: u64,
    pub(super) bytes: String,
}

#[derive(Debug, Clone)]
pub(super) struct Totals {
    pub(super) repositories: u64,
    pub(super) manifests: u64,
    pub(super) tags: u64,
    pub(super) blobs: u64,
    pub(super) bytes: String,
}

#[derive(Template)]
#[template(path = "ui/storage.html")]
pub(super) struct StoragePage {
    pub(super) user: Option<String>,
    /// Whether to offer "Log in" to an anonymous caller.
    pub(super) login: bool,
    pub(super) totals: Option<Totals>,
    pub(super) kinds: Vec<CountRow>,
    pub(super) types: Vec<CountRow>,
    pub(super) largest: Vec<SizeRow>,
    pub(super) shared: Vec<BlobRow>,
}

#[derive(Template)]
#[template(path = "ui/confirm.html")]
pub(super) struct ConfirmPage {
    pub(super) user: Option<String>,
    /// Whether to offer "Log in" to an anonymous caller.
    pub(super) login: bool,
    pub(super) repo: String,
    pub(super) repo_href: String,
    /// `tag v1` or `manifest sha256:…`.
    pub(super) what: String,
    pub(super) digest: String,
    /// Tags that go with a deleted manifest.
    pub(super) tags: Vec<String>,
    pub(super) action: String,
    pub(super) cancel: String,
}

#[derive(Template)]
#[template(path = "ui/error.html")]
pub(super) struct ErrorPage {
    pub(super) status: u16,
    pub(super) reason: String,
    pub(super) message: String,
}

impl ErrorPage {
    pub(super) fn new(status: StatusCode, message: String) -> ErrorPage {
        ErrorPage {
            status: status.as_u16(),
            reason: status.canonical_reason().unwrap_or("Error").to_string(),
            message,
        }
    }

    /// The page; if the template fails, the message as escaped text, so an error never
    /// hides the error.
    pub(super) fn render_or_plain(&self) -> String {
        self.render().unwrap_or_else(|_| {
            askama::filters::escape(&self.message, askama::filters::Html)
                .map(|m| m.to_string())
                .unwrap_or_default()
        })
    }
}

/// Renders a page; a template failure is an internal error (logged, a 500).
pub(super) fn render(page: &impl Template) -> Result<String, crate::error::RegistryError> {
    page.render()
        .map_err(|e| crate::error::RegistryError::Render(e.to_string()))
}
