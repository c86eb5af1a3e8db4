//! Checking `--external` specifications before CRIU sees them.
//!
//! CRIU accepts any text in its `external` list and ignores what it does
//! not understand (`--external garbage` dumps as if nothing was given), so a
//! typo silently changes what is dumped. [`External::parse`] accepts only
//! the forms CRIU documents for the side they are given on
//! (`Documentation/criu.txt`):
//!
//! | type | dump | restore |
//! | --- | --- | --- |
//! | `mnt` | `mnt[MOUNTPOINT]:KEY`, `mnt[]`, `mnt[]:FLAGS` (`m`, `s`) | `mnt[KEY]:PATH`, `mnt[]` |
//! | `dev` | `dev[MAJOR/MINOR]:NAME` | `dev[NAME]:/dev/PATH` |
//! | `file` | `file[MNT_ID:INODE]` (hex) | (give it with inherit-fd) |
//! | `tty` | `tty[RDEV:DEV]` (hex) | (give it with inherit-fd) |
//! | `unix` | `unix[INODE]` | (nothing to give) |
//! | `net`, `pid` | `net[INODE]:KEY`, `pid[INODE]:KEY` | (give it with inherit-fd) |
//! | `veth` | | `veth[INSIDE]:OUTSIDE` or `OUTSIDE@BRIDGE` |
//! | `macvlan` | | `macvlan[INSIDE]:OUTSIDE` |

use crate::External;

/// Which request an external specification is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// A dump or pre-dump.
    Dump,
    /// A restore.
    Restore,
}

impl Side {
    fn name(self) -> &'static str {
        match self {
            Self::Dump => "checkpoint",
            Self::Restore => "restore",
        }
    }
}

/// Why an `--external` specification was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExternalError {
    /// Not `TYPE[ID]` or `TYPE[ID]:VALUE` at all.
    #[error("--external {spec:?} is not TYPE[ID] or TYPE[ID]:VALUE (e.g. mnt[/data]:data); see docs/processes.md")]
    Syntax {
        /// The specification given.
        spec: String,
    },
    /// A type CRIU does not know.
    #[error("--external {spec:?} has the unknown type {kind:?}; CRIU knows mnt, dev, file, tty, unix, net, pid, veth and macvlan")]
    UnknownType {
        /// The specification given.
        spec: String,
        /// Its type.
        kind: String,
    },
    /// A type that means nothing on this side.
    #[error("--external {spec:?}: {kind} is not given at {side}; {hint}")]
    WrongSide {
        /// The specification given.
        spec: String,
        /// Its type.
        kind: String,
        /// `checkpoint` or `restore`.
        side: &'static str,
        /// What to do instead.
        hint: &'static str,
    },
    /// The right type with a malformed id or value.
    #[error("--external {spec:?} is not of the form {form}")]
    Form {
        /// The specification given.
        spec: String,
        /// The form its type takes on this side.
        form: &'static str,
    },
}

impl External {
    /// Checks `spec` against the forms CRIU documents for `side` and returns
    /// it as an [`External`].
    pub fn parse(spec: &str, side: Side) -> Result<Self, ExternalError> {
        let syntax = || ExternalError::Syntax {
            spec: spec.to_owned(),
        };
        let open = spec.find('[').ok_or_else(syntax)?;
        let close = spec.find(']').ok_or_else(syntax)?;
        if close < open || spec[open + 1..close].contains('[') {
            return Err(syntax());
        }
        let kind = &spec[..open];
        let id = &spec[open + 1..close];
        let rest = &spec[close + 1..];
        let value = match rest.strip_prefix(':') {
            Some(v) => Some(v),
            None if rest.is_empty() => None,
            None => return Err(syntax()),
        };
        if kind.is_empty() || !kind.bytes().all(|b| b.is_ascii_lowercase()) {
            return Err(syntax());
        }
        let form = |form: &'static str| ExternalError::Form {
            spec: spec.to_owned(),
            form,
        };
        let wrong = |hint: &'static str| ExternalError::WrongSide {
            spec: spec.to_owned(),
            kind: kind.to_owned(),
            side: side.name(),
            hint,
        };
        let ok = match (kind, side) {
            ("mnt", Side::Dump) => match (id, value) {
                ("", None) => true,
                ("", Some(flags)) => flags.bytes().all(|b| b == b'm' || b == b's'),
                (mountpoint, Some(key)) => mountpoint.starts_with('/') && plain(key),
                _ => false,
            }
            .then_some(())
            .ok_or_else(|| form("mnt[/MOUNTPOINT]:KEY, mnt[] or mnt[]:FLAGS (m, s)")),
            ("mnt", Side::Restore) => match (id, value) {
                ("", None) => true,
                (key, Some(path)) => plain(key) && path.starts_with('/'),
                _ => false,
            }
            .then_some(())
            .ok_or_else(|| form("mnt[KEY]:/PATH or mnt[]")),
            ("dev", Side::Dump) => id
                .split_once('/')
                .filter(|(major, minor)| decimal(major) && decimal(minor))
                .filter(|_| value.is_some_and(plain))
                .map(|_| ())
                .ok_or_else(|| form("dev[MAJOR/MINOR]:NAME")),
            ("dev", Side::Restore) => (plain(id) && value.is_some_and(|p| p.starts_with('/')))
                .then_some(())
                .ok_or_else(|| form("dev[NAME]:/dev/PATH")),
            ("file", Side::Dump) => pair_of_hex(id, value)
                .then_some(())
                .ok_or_else(|| form("file[MNT_ID:INODE] in hex")),
            ("tty", Side::Dump) => pair_of_hex(id, value)
                .then_some(())
                .ok_or_else(|| form("tty[RDEV:DEV] in hex")),
            ("unix", Side::Dump) => (decimal(id) && value.is_none())
                .then_some(())
                .ok_or_else(|| form("unix[INODE]")),
            ("net" | "pid", Side::Dump) => (decimal(id) && value.is_some_and(plain))
                .then_some(())
                .ok_or_else(|| form("net[INODE]:KEY or pid[INODE]:KEY")),
            ("veth", Side::Restore) => (plain(id)
                && value.is_some_and(|v| {
                    let (dev, bridge) = v.split_once('@').unwrap_or((v, "x"));
                    plain(dev) && plain(bridge)
                }))
            .then_some(())
            .ok_or_else(|| form("veth[INSIDE]:OUTSIDE or veth[INSIDE]:OUTSIDE@BRIDGE")),
            ("macvlan", Side::Restore) => (plain(id) && value.is_some_and(plain))
                .then_some(())
                .ok_or_else(|| form("macvlan[INSIDE]:OUTSIDE")),
            ("file" | "tty" | "net" | "pid", Side::Restore) => Err(wrong(
                "give the resource back with --inherit-fd fd[N]:KEY (KEY as at checkpoint)",
            )),
            ("unix", Side::Restore) => Err(wrong(
                "the socket's peer is not restored; restore with --ext-unix-sk",
            )),
            ("veth" | "macvlan", Side::Dump) => Err(wrong(
                "network devices are named at restore; give it to restore instead",
            )),
            _ => Err(ExternalError::UnknownType {
                spec: spec.to_owned(),
                kind: kind.to_owned(),
            }),
        };
        ok.map(|()| External::raw(spec))
    }
}

/// A key or name: not empty, no spaces, brackets, colons or control
/// characters.
fn plain(text: &str) -> bool {
    !text.is_empty()
        && !text
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || matches!(c, '[' | ']' | ':'))
}

fn decimal(text: &str) -> bool {
    !text.is_empty() && text.len() <= 20 && text.bytes().all(|b| b.is_ascii_digit())
}

fn hex(text: &str) -> bool {
    !text.is_empty() && text.len() <= 16 && text.bytes().all(|b| b.is_ascii_hexdigit())
}

fn pair_of_hex(id: &str, value: Option<&str>) -> bool {
    value.is_none() && id.split_once(':').is_some_and(|(a, b)| hex(a) && hex(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_what_criu_documents() {
        for spec in [
            "mnt[/data]:data",
            "mnt[]",
            "mnt[]:ms",
            "dev[8/1]:disk",
            "file[1d:3f2a]",
            "tty[8800:1a]",
            "unix[123456]",
            "net[4026531840]:extRootNetNS",
            "pid[4026531836]:extRootPidNS",
        ] {
            External::parse(spec, Side::Dump).unwrap_or_else(|e| panic!("{spec}: {e}"));
        }
        for spec in [
            "mnt[data]:/srv/data",
            "mnt[]",
            "dev[disk]:/dev/sda1",
            "veth[eth0]:veth-host",
            "veth[eth0]:veth-host@br0",
            "macvlan[mv0]:eth0",
        ] {
            External::parse(spec, Side::Restore).unwrap_or_else(|e| panic!("{spec}: {e}"));
        }
        // The helpers' own output passes.
        for e in [
            External::tty(0x8800, 0x1a),
            External::file(0x1d, 0x3f2a),
            External::net_namespace(4026531840, "k"),
            External::mount("/data", "data"),
        ] {
            External::parse(e.as_str(), Side::Dump).unwrap_or_else(|x| panic!("{e}: {x}"));
        }
    }

    #[test]
    fn refuses_the_rest_with_the_form_to_use() {
        let cases: &[(&str, Side, &str)] = &[
            ("garbage", Side::Dump, "is not TYPE[ID]"),
            ("mnt[/data", Side::Dump, "is not TYPE[ID]"),
            ("mnt]/x[:k", Side::Dump, "is not TYPE[ID]"),
            ("mnt[/x]k", Side::Dump, "is not TYPE[ID]"),
            ("MNT[/x]:k", Side::Dump, "is not TYPE[ID]"),
            ("disk[8/1]:d", Side::Dump, "unknown type \"disk\""),
            ("mnt[data]:k", Side::Dump, "mnt[/MOUNTPOINT]:KEY"),
            ("mnt[/data]", Side::Dump, "mnt[/MOUNTPOINT]:KEY"),
            ("mnt[/data]:", Side::Dump, "mnt[/MOUNTPOINT]:KEY"),
            ("mnt[]:x", Side::Dump, "FLAGS (m, s)"),
            ("mnt[data]:relative", Side::Restore, "mnt[KEY]:/PATH"),
            ("dev[8:1]:d", Side::Dump, "dev[MAJOR/MINOR]:NAME"),
            ("file[zz:1]", Side::Dump, "in hex"),
            ("tty[8800]", Side::Dump, "in hex"),
            ("tty[8800:1a]:x", Side::Dump, "in hex"),
            ("unix[abc]", Side::Dump, "unix[INODE]"),
            ("net[1]", Side::Dump, "net[INODE]:KEY"),
            ("net[1]:a b", Side::Dump, "net[INODE]:KEY"),
            ("tty[8800:1a]", Side::Restore, "--inherit-fd"),
            ("veth[eth0]:x", Side::Dump, "named at restore"),
            ("veth[eth0]:", Side::Restore, "veth[INSIDE]:OUTSIDE"),
        ];
        for (spec, side, want) in cases {
            let err = External::parse(spec, *side).expect_err(spec).to_string();
            assert!(err.contains(want), "{spec}: {err}");
            assert!(err.contains(&format!("{spec:?}")), "{spec}: {err}");
        }
    }
}
