//! Tar archives written byte by byte, so that names, kinds and links are
//! whatever a test wants — `..`, absolute paths, links out of the tree,
//! sizes that lie — to check that a reader refuses them.

/// One member of a crafted archive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// The name, as written (at most 100 bytes: the old header).
    pub name: String,
    /// The type flag (`b'0'` file, `b'2'` symlink, `b'1'` hard link, `b'5'`
    /// directory, ...).
    pub kind: u8,
    pub data: Vec<u8>,
    /// The size the header claims (the data's length if `None`).
    pub size: Option<u64>,
    /// The link target, for links.
    pub link: Option<String>,
}

impl Member {
    /// A member of `kind` named `name` holding `data`.
    pub fn new(name: &str, kind: u8, data: &[u8]) -> Self {
        Self {
            name: name.into(),
            kind,
            data: data.to_vec(),
            size: None,
            link: None,
        }
    }

    /// The same, claiming another size.
    pub fn claiming(mut self, size: u64) -> Self {
        self.size = Some(size);
        self
    }

    /// The same, linking to `target`.
    pub fn linking(mut self, target: &str) -> Self {
        self.link = Some(target.into());
        self
    }
}

/// Why an archive could not be written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TarError {
    #[error("the name or link {0:?} is longer than an old tar header allows (100 bytes)")]
    TooLong(String),
}

/// The archive of `members`, ending with the two zero blocks.
pub fn archive(members: &[Member]) -> Result<Vec<u8>, TarError> {
    let mut out = Vec::new();
    for m in members {
        let mut h = tar::Header::new_old();
        {
            let old = h.as_old_mut();
            let name = old
                .name
                .get_mut(..m.name.len())
                .ok_or_else(|| TarError::TooLong(m.name.clone()))?;
            name.copy_from_slice(m.name.as_bytes());
            if let Some(link) = &m.link {
                let target = old
                    .linkname
                    .get_mut(..link.len())
                    .ok_or_else(|| TarError::TooLong(link.clone()))?;
                target.copy_from_slice(link.as_bytes());
            }
            old.linkflag = [m.kind];
        }
        h.set_mode(0o600);
        h.set_size(m.size.unwrap_or(m.data.len() as u64));
        h.set_mtime(0);
        h.set_cksum();
        out.extend_from_slice(h.as_bytes());
        out.extend_from_slice(&m.data);
        out.extend(std::iter::repeat_n(0u8, (512 - m.data.len() % 512) % 512));
    }
    out.extend(std::iter::repeat_n(0u8, 1024));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostile_names_are_written_as_given() {
        let bytes = archive(&[
            Member::new("../escape", b'0', b"x"),
            Member::new("link", b'2', b"").linking("/etc/passwd"),
        ])
        .unwrap();
        assert_eq!(bytes.len() % 512, 0);
        assert_eq!(&bytes[..9], b"../escape");
        assert!(archive(&[Member::new(&"n".repeat(101), b'0', b"")]).is_err());
    }
}
