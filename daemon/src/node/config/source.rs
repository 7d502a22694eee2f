//! What the node and peering configs share: [`ConfigError`], durations, integer ranges,
//! and turning a `toml` span into a one-line `FILE:LINE:COL: REASON` error.

use std::net::SocketAddr;
use std::ops::{Range, RangeInclusive};
use std::path::{Path, PathBuf};
use std::time::Duration;

use toml::Spanned;
use trellis_routing::NodeId;

use super::DEFAULT_LINK_COST;

/// Why a configuration was refused. The message is one line.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A problem at a place in a file.
    #[error("{}:{line}:{col}: {reason}", file.display())]
    At {
        /// The file.
        file: PathBuf,
        /// 1-based line.
        line: usize,
        /// 1-based column, in characters.
        col: usize,
        /// What is wrong.
        reason: String,
    },
    /// A problem with a whole file or directory (unreadable, missing a key).
    #[error("{}: {reason}", file.display())]
    File {
        /// The file or directory.
        file: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// An environment override is invalid or leaves the config invalid.
    #[error("{var}: {reason}")]
    Env {
        /// The variable.
        var: String,
        /// What is wrong.
        reason: String,
    },
    /// A config changed in code (command-line flags) is invalid.
    #[error("{0}")]
    Invalid(String),
}

/// An optional string key with its place in the file.
pub(crate) type Text = Option<Spanned<String>>;
/// An optional integer key with its place in the file.
pub(crate) type Int = Option<Spanned<i64>>;
/// Any integer above 0 (limits and route counts).
pub(crate) const ANY_POSITIVE: RangeInclusive<i64> = 1..=i64::MAX;

/// Parses a duration with one unit: `250ms`, `3s`, `2m`, `1h`, `1d` (whole numbers only).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let bad = || {
        format!("invalid duration {text:?}: expected a whole number and a unit ms, s, m, h or d (\"250ms\", \"3s\", \"2m\")")
    };
    let n: u64 = num.parse().map_err(|_| bad())?;
    let millis_per = match unit {
        "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => return Err(bad()),
    };
    n.checked_mul(millis_per)
        .map(Duration::from_millis)
        .ok_or_else(|| format!("duration {text:?} is too long"))
}

/// Reads a config file as UTF-8 text.
pub(crate) fn read_text(path: &Path) -> Result<String, ConfigError> {
    std::fs::read_to_string(path).map_err(|e| ConfigError::File {
        file: path.to_owned(),
        reason: format!("cannot read: {e}"),
    })
}

/// The text of one config file, for turning spans into `file:line:col` errors.
pub(crate) struct Source<'a> {
    /// The file the text came from.
    pub file: &'a Path,
    /// Its text.
    pub text: &'a str,
}

impl Source<'_> {
    /// Deserializes the whole text, locating syntax and type errors.
    pub fn deserialize<T: serde::de::DeserializeOwned>(&self) -> Result<T, ConfigError> {
        toml::from_str(self.text).map_err(|e| {
            // Some messages span several lines; the error must stay on one.
            let reason = e
                .message()
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .collect::<Vec<_>>()
                .join("; ");
            match e.span() {
                Some(span) => self.at(span, reason),
                None => self.whole(reason),
            }
        })
    }

    /// An error at the start of `span`.
    pub fn at(&self, span: Range<usize>, reason: impl Into<String>) -> ConfigError {
        let before = self.text.get(..span.start).unwrap_or(self.text);
        let line = before.matches('\n').count() + 1;
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        let col = before.get(line_start..).map_or(0, |s| s.chars().count()) + 1;
        ConfigError::At {
            file: self.file.to_owned(),
            line,
            col,
            reason: reason.into(),
        }
    }

    /// An error about the file as a whole.
    pub fn whole(&self, reason: impl Into<String>) -> ConfigError {
        ConfigError::File {
            file: self.file.to_owned(),
            reason: reason.into(),
        }
    }

    /// `v` as a socket address.
    pub fn socket_addr(&self, v: &Spanned<String>, key: &str) -> Result<SocketAddr, ConfigError> {
        v.get_ref().trim().parse().map_err(|_| {
            self.at(
                v.span(),
                format!("{key} {:?} is not an IP:port address", v.get_ref()),
            )
        })
    }

    /// `v` as a node id.
    pub fn node_id(&self, v: &Spanned<String>) -> Result<NodeId, ConfigError> {
        NodeId::new(v.get_ref()).map_err(|e| self.at(v.span(), e.to_string()))
    }

    /// `v` as a duration.
    pub fn duration(&self, v: &Spanned<String>) -> Result<Duration, ConfigError> {
        parse_duration(v.get_ref()).map_err(|e| self.at(v.span(), e))
    }

    /// `v` as a path; a relative path is taken from the file's directory.
    pub fn relative_path(&self, v: &Spanned<String>, key: &str) -> Result<PathBuf, ConfigError> {
        if v.get_ref().is_empty() {
            return Err(self.at(v.span(), format!("{key} is empty")));
        }
        let base = self.file.parent().unwrap_or(Path::new(""));
        Ok(base.join(v.get_ref()))
    }

    /// An optional link cost, 1..=65535, default [`DEFAULT_LINK_COST`].
    pub fn link_cost(&self, v: &Int) -> Result<u32, ConfigError> {
        self.int_or(v, "link_cost", 1..=65_535, DEFAULT_LINK_COST)
    }

    /// An optional integer in `range`, or `default` when absent. A range ending at
    /// `i64::MAX` means "no upper bound" (up to what `T` holds).
    pub fn int_or<T: TryFrom<i64>>(
        &self,
        v: &Int,
        key: &str,
        range: RangeInclusive<i64>,
        default: T,
    ) -> Result<T, ConfigError> {
        let Some(v) = v else { return Ok(default) };
        let n = *v.get_ref();
        let fits = T::try_from(n).ok().filter(|_| range.contains(&n));
        fits.ok_or_else(|| {
            let (min, max) = (range.start(), range.end());
            let want = if *max == i64::MAX {
                format!("at least {min}")
            } else {
                format!("in {min}..={max}")
            };
            self.at(v.span(), format!("{key} must be {want}, got {n}"))
        })
    }
}
