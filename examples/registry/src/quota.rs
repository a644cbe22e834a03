//! `--quota PATTERN=SIZE` and the config file's `[[quota]]` tables (`pattern`, `bytes`):
//! byte limits per repository pattern (see `registry_core::quotas`).

use std::fmt;
use std::str::FromStr;

use registry_core::auth::NamePattern;
use registry_core::quotas::Quotas;
use serde::{Deserialize, Serialize};

/// One quota as written in a flag (`team-a/*=10GiB`) or a file table
/// (`pattern = "team-a/*"`, `bytes = 10737418240` or `"10GiB"`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "SpecForm", into = "String")]
pub struct QuotaSpec {
    pub pattern: NamePattern,
    pub bytes: u64,
}

/// The spellings a file may use.
#[derive(Deserialize)]
#[serde(untagged)]
enum SpecForm {
    Short(String),
    Table { pattern: String, bytes: Size },
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Size {
    Number(u64),
    Text(String),
}

impl TryFrom<SpecForm> for QuotaSpec {
    type Error = String;

    fn try_from(form: SpecForm) -> Result<Self, String> {
        match form {
            SpecForm::Short(s) => s.parse(),
            SpecForm::Table { pattern, bytes } => Ok(QuotaSpec {
                pattern: pattern.parse().map_err(|e| format!("{e}"))?,
                bytes: match bytes {
                    Size::Number(n) => n,
                    Size::Text(s) => parse_size(&s)?,
                },
            }),
        }
    }
}

impl From<QuotaSpec> for String {
    fn from(q: QuotaSpec) -> String {
        q.to_string()
    }
}

impl fmt::Display for QuotaSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}={}", self.pattern.as_str(), self.bytes)
    }
}

impl FromStr for QuotaSpec {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let (pattern, size) = s
            .split_once('=')
            .ok_or_else(|| format!("quota {s:?}: expected PATTERN=SIZE"))?;
        Ok(QuotaSpec {
            pattern: pattern.trim().parse().map_err(|e| format!("{e}"))?,
            bytes: parse_size(size.trim())?,
        })
    }
}

/// Bytes, optionally with a unit: `500`, `500B`, `10KB`/`10MB`/`10GB`/`10TB` (powers of
/// 1000), `10KiB`/`10MiB`/`10GiB`/`10TiB` (powers of 1024).
pub fn parse_size(s: &str) -> Result<u64, String> {
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (digits, unit) = s.split_at(split);
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("size {s:?}: expected a number of bytes, e.g. 500MiB"))?;
    let factor: u64 = match unit.trim() {
        "" | "B" => 1,
        "KB" | "kB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        "TB" => 1_000_000_000_000,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        "TiB" => 1 << 40,
        other => return Err(format!("size {s:?}: unknown unit {other:?}")),
    };
    n.checked_mul(factor)
        .ok_or_else(|| format!("size {s:?} is too large"))
}

/// The registry's quotas from the specs.
pub fn quotas(specs: &[QuotaSpec]) -> Quotas {
    Quotas::new(specs.iter().map(|q| (q.pattern.clone(), q.bytes)))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn flags_and_tables() {
        let q: QuotaSpec = "team-a/*=10GiB".parse().unwrap();
        assert_eq!((q.pattern.as_str(), q.bytes), ("team-a/*", 10 << 30));
        assert_eq!("x=500".parse::<QuotaSpec>().unwrap().bytes, 500);
        assert_eq!("x=2MB".parse::<QuotaSpec>().unwrap().bytes, 2_000_000);
        assert!("x".parse::<QuotaSpec>().is_err());
        assert!("X=1".parse::<QuotaSpec>().is_err());
        assert!("x=1PB".parse::<QuotaSpec>().is_err());
        #[derive(Deserialize)]
        struct File {
            quota: Vec<QuotaSpec>,
        }
        let f: File = toml::from_str(
            "[[quota]]\npattern = \"a/*\"\nbytes = 100\n\n\
             [[quota]]\npattern = \"b\"\nbytes = \"1KiB\"\n",
        )
        .unwrap();
        assert_eq!(f.quota[0].bytes, 100);
        assert_eq!(f.quota[1].bytes, 1024);
    }
}
