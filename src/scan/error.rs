//! Why a scan was refused: every error names the file (or URL) and the place.

use chrono::{DateTime, Utc};

/// Why a scan was rejected.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ScanError {
    /// The file or URL could not be read.
    #[error("{source_name}: cannot read scan: {message}")]
    Read {
        /// File path or URL.
        source_name: String,
        /// What went wrong.
        message: String,
    },
    /// The scan is bigger than `max_scan_bytes`.
    #[error(
        "{source_name}: scan is {size} bytes, over the limit of {limit} bytes (max_scan_bytes)"
    )]
    TooLarge {
        /// File path or URL.
        source_name: String,
        /// Its size, or the size read so far.
        size: u64,
        /// The configured limit.
        limit: u64,
    },
    /// Not JSON, or JSON of the wrong shape.
    #[error("{source_name}:{line}:{column}: at {json_path}: {message}")]
    Json {
        /// File path or URL.
        source_name: String,
        /// 1-based line.
        line: usize,
        /// 1-based column.
        column: usize,
        /// JSON path of the offending value, such as `identities[3].risk_score`.
        json_path: String,
        /// What is wrong.
        message: String,
    },
    /// Well-formed but inconsistent (duplicates, dangling references).
    #[error("{source_name}: at {json_path}: {message}")]
    Invalid {
        /// File path or URL.
        source_name: String,
        /// JSON path of the offending value.
        json_path: String,
        /// What is wrong.
        message: String,
    },
    /// The scan is for another tenant than the one configured.
    #[error(
        "{source_name}: scan is for tenant {found}, but tenant {tenant:?} is configured as {expected}"
    )]
    WrongTenant {
        /// File path or URL.
        source_name: String,
        /// Configured tenant name.
        tenant: String,
        /// Configured tenant id.
        expected: String,
        /// The scan's tenant id.
        found: String,
    },
    /// The scan is older than `max_scan_age`.
    #[error("{source_name}: scan from {scanned_at} is older than max_scan_age ({max_age})")]
    TooOld {
        /// File path or URL.
        source_name: String,
        /// The scan's time.
        scanned_at: DateTime<Utc>,
        /// The configured limit, human-readable.
        max_age: String,
    },
    /// The scan is dated later than now plus `max_clock_skew` (a typo such as
    /// 2099 would otherwise make it the newest scan for ever).
    #[error(
        "{source_name}: scan is dated {scanned_at}, in the future (now {now}, allowed clock skew {skew}); refused"
    )]
    FutureDated {
        /// File path or URL.
        source_name: String,
        /// The scan's time.
        scanned_at: DateTime<Utc>,
        /// The time of the check.
        now: DateTime<Utc>,
        /// The configured allowance, human-readable.
        skew: String,
    },
    /// No scan matched the request.
    #[error("{0}")]
    NotFound(String),
    /// The command asked for something no source can give (a `--scanned-at`
    /// that matches no scan, or one for a URL source): a mistake in the
    /// command, not a refused scan, so nothing is recorded.
    #[error("{0}")]
    BadRequest(String),
}
