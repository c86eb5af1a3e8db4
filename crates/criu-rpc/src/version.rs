//! CRIU's version, as answered by the VERSION request.

use std::fmt;

use criu_proto::rpc;
use serde::Serialize;

/// A CRIU version, as CRIU reports it over RPC (not parsed from `--version`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CriuVersion {
    /// Major number (4 for 4.1.1).
    pub major: u32,
    /// Minor number (1 for 4.1.1).
    pub minor: u32,
    /// Sublevel, sent only when the release has one (1 for 4.1.1).
    pub sublevel: u32,
    /// Extra number, normally absent.
    pub extra: Option<u32>,
    /// Git id, only for builds from a git tree.
    pub gitid: Option<String>,
}

/// The oldest CRIU crabmigrate works with.
pub const MINIMUM: CriuVersion = CriuVersion::new(4, 0, 0);

impl CriuVersion {
    /// A release version without extra parts.
    pub const fn new(major: u32, minor: u32, sublevel: u32) -> Self {
        Self {
            major,
            minor,
            sublevel,
            extra: None,
            gitid: None,
        }
    }

    /// Converts CRIU's answer. Negative numbers (never sent by a real CRIU)
    /// read as zero.
    pub fn from_proto(v: &rpc::CriuVersion) -> Self {
        let n = |x: i32| u32::try_from(x).unwrap_or(0);
        Self {
            major: n(v.major_number),
            minor: n(v.minor_number),
            sublevel: v.sublevel.map(n).unwrap_or(0),
            extra: v.extra.map(n),
            gitid: v.gitid.clone().filter(|g| !g.is_empty()),
        }
    }

    /// The version as one number, `major * 10000 + minor * 100 + sublevel`,
    /// the convention of runc and go-criu (without their +100 for git builds).
    pub fn as_number(&self) -> u32 {
        self.major * 10_000 + self.minor * 100 + self.sublevel
    }

    /// Whether this version is `major.minor.sublevel` or newer.
    pub fn at_least(&self, major: u32, minor: u32, sublevel: u32) -> bool {
        (self.major, self.minor, self.sublevel) >= (major, minor, sublevel)
    }

    /// Whether crabmigrate supports this version ([`MINIMUM`] or newer).
    pub fn is_supported(&self) -> bool {
        self.at_least(MINIMUM.major, MINIMUM.minor, MINIMUM.sublevel)
    }
}

impl fmt::Display for CriuVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.major, self.minor)?;
        if self.sublevel != 0 || self.extra.is_some() {
            write!(f, ".{}", self.sublevel)?;
        }
        if let Some(extra) = self.extra {
            write!(f, ".{extra}")?;
        }
        if let Some(gitid) = &self.gitid {
            write!(f, " ({gitid})")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compares_and_formats() {
        let v = CriuVersion::from_proto(&rpc::CriuVersion {
            major_number: 4,
            minor_number: 1,
            sublevel: Some(1),
            ..Default::default()
        });
        assert_eq!(v.to_string(), "4.1.1");
        assert_eq!(v.as_number(), 40101);
        assert!(v.at_least(4, 1, 1) && v.at_least(3, 17, 9) && !v.at_least(4, 2, 0));
        assert!(v.is_supported());
        assert!(!CriuVersion::new(3, 17, 1).is_supported());
        assert_eq!(CriuVersion::new(4, 2, 0).to_string(), "4.2");
        let git = CriuVersion {
            gitid: Some("v4.1-12-gabc".into()),
            ..CriuVersion::new(4, 1, 0)
        };
        assert_eq!(git.to_string(), "4.1 (v4.1-12-gabc)");
    }
}
