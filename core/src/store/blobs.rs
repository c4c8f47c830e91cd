//! The content-addressed blob store beside the database: `DB.blobs/<sha256>`, each file written to
//! a temporary name, fsync'd, renamed into place and its directory fsync'd, so a blob that has a
//! name is whole. A file the user picked is copied in before its message is committed: nothing the
//! user sent depends on the original still existing. Downloads are written to
//! `DB.blobs/partial/<name>` and moved in once their hash is checked.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

/// The blob directory of a database.
#[derive(Clone, Debug)]
pub struct Blobs {
    dir: PathBuf,
}

/// A blob as stored: its hash and size.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stored {
    /// SHA-256, lowercase hex.
    pub sha256: String,
    /// Bytes.
    pub size: u64,
}

impl Blobs {
    /// The blob store of the database at `db` (`DB.blobs`, created owner-only when first used).
    pub fn for_db(db: &Path) -> Blobs {
        let mut name = db.file_name().map(|n| n.to_os_string()).unwrap_or_default();
        name.push(".blobs");
        Blobs {
            dir: db.with_file_name(name),
        }
    }

    fn ensure(&self, dir: &Path) -> io::Result<()> {
        fs::create_dir_all(dir)?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            fs::set_permissions(dir, fs::Permissions::from_mode(0o700))?;
        }
        Ok(())
    }

    /// The path of the blob with this hash (whether or not it exists).
    pub fn path(&self, sha256: &str) -> PathBuf {
        self.dir.join(sha256)
    }

    /// Whether the blob with this hash is here.
    pub fn has(&self, sha256: &str) -> bool {
        is_hex_sha256(sha256) && self.path(sha256).is_file()
    }

    /// Copies the file at `source` in (hashing it on the way) and makes it durable. Returns its
    /// hash and size; a blob with that hash already here is kept as it is.
    pub fn put_file(&self, source: &Path) -> io::Result<Stored> {
        let mut input = File::open(source)?;
        self.ensure(&self.dir)?;
        let tmp = self
            .dir
            .join(format!(".incoming-{}", uuid::Uuid::new_v4().simple()));
        let result = (|| {
            let mut out = create_private(&tmp)?;
            let mut hasher = Sha256::new();
            let mut buf = vec![0u8; 256 * 1024];
            let mut size = 0u64;
            loop {
                let n = input.read(&mut buf)?;
                if n == 0 {
                    break;
                }
                hasher.update(&buf[..n]);
                out.write_all(&buf[..n])?;
                size += n as u64;
            }
            out.sync_all()?;
            let sha256 = hex(&hasher.finalize());
            Ok(Stored { sha256, size })
        })();
        match result {
            Ok(stored) => {
                self.commit(&tmp, &stored.sha256)?;
                Ok(stored)
            }
            Err(e) => {
                let _ = fs::remove_file(&tmp);
                Err(e)
            }
        }
    }

    /// Moves a finished temporary file in under its hash and syncs the directory.
    fn commit(&self, tmp: &Path, sha256: &str) -> io::Result<()> {
        let dest = self.path(sha256);
        if dest.is_file() {
            fs::remove_file(tmp)?;
        } else {
            fs::rename(tmp, &dest)?;
        }
        sync_dir(&self.dir)
    }

    /// The partial file of download `name` (created, owner-only, if missing), and how many bytes
    /// it already holds: a download resumes after a kill.
    pub fn partial(&self, name: &str) -> io::Result<(PathBuf, u64)> {
        let dir = self.dir.join("partial");
        self.ensure(&dir)?;
        let path = dir.join(name);
        let len = match fs::metadata(&path) {
            Ok(m) => m.len(),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                create_private(&path)?;
                0
            }
            Err(e) => return Err(e),
        };
        Ok((path, len))
    }

    /// A finished download: its whole content is hashed; if `expected` (hex) is given and
    /// differs, the file is deleted and the mismatch returned as an error. Else it moves in.
    pub fn finish_partial(&self, path: &Path, expected: Option<&str>) -> io::Result<Stored> {
        let mut f = File::open(path)?;
        f.sync_all()?;
        let mut hasher = Sha256::new();
        let size = io::copy(&mut f, &mut HashWriter(&mut hasher))?;
        let sha256 = hex(&hasher.finalize());
        if let Some(want) = expected {
            if !want.eq_ignore_ascii_case(&sha256) {
                let _ = fs::remove_file(path);
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("the file's SHA-256 is {sha256}, not the {want} its sender announced"),
                ));
            }
        }
        self.commit(path, &sha256)?;
        Ok(Stored { sha256, size })
    }
}

struct HashWriter<'a>(&'a mut Sha256);

impl Write for HashWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.update(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn create_private(path: &Path) -> io::Result<File> {
    let mut o = OpenOptions::new();
    o.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        o.mode(0o600);
    }
    o.open(path)
}

#[cfg(unix)]
fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

#[cfg(not(unix))]
fn sync_dir(_dir: &Path) -> io::Result<()> {
    // Windows has no directory handle to sync; NTFS journals the rename itself.
    Ok(())
}

/// Lowercase hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Whether `s` looks like a SHA-256 in hex (a blob name never leaves the blob directory).
pub fn is_hex_sha256(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// A file name safe to show and to save under: no path separators, no control characters, no
/// leading dots, at most 200 characters; `file` if nothing is left.
pub fn safe_name(name: &str) -> String {
    let cleaned: String = name
        .chars()
        .map(|c| {
            if c == '/' || c == '\\' || c.is_control() || c == ':' {
                '_'
            } else {
                c
            }
        })
        .collect();
    let trimmed = cleaned.trim().trim_start_matches('.').trim();
    let short: String = trimmed.chars().take(200).collect();
    if short.is_empty() {
        "file".to_owned()
    } else {
        short
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_is_copied_in_under_its_hash_and_the_original_may_go() {
        let dir = tempfile::tempdir().unwrap();
        let blobs = Blobs::for_db(&dir.path().join("t.db"));
        let src = dir.path().join("photo.jpg");
        fs::write(&src, b"hello").unwrap();
        let s = blobs.put_file(&src).unwrap();
        assert_eq!(
            s.sha256,
            "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"
        );
        fs::remove_file(&src).unwrap();
        assert_eq!(fs::read(blobs.path(&s.sha256)).unwrap(), b"hello");
        assert!(blobs.has(&s.sha256));
        assert!(!blobs.has("../t.db"));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(blobs.path(&s.sha256))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }

    #[test]
    fn a_download_with_the_wrong_hash_is_deleted_and_reported() {
        let dir = tempfile::tempdir().unwrap();
        let blobs = Blobs::for_db(&dir.path().join("t.db"));
        let (p, n) = blobs.partial("x").unwrap();
        assert_eq!(n, 0);
        fs::write(&p, b"evil").unwrap();
        let e = blobs.finish_partial(&p, Some(&"0".repeat(64))).unwrap_err();
        assert!(e.to_string().contains("not the"), "{e}");
        assert!(!p.exists());
        let (p, _) = blobs.partial("y").unwrap();
        fs::write(&p, b"hello").unwrap();
        let s = blobs.finish_partial(&p, None).unwrap();
        assert!(blobs.has(&s.sha256));
    }

    #[test]
    fn names_lose_separators_controls_and_leading_dots() {
        assert_eq!(safe_name("../../etc/passwd"), "_.._etc_passwd");
        assert_eq!(safe_name("a\u{0}b\nc.txt"), "a_b_c.txt");
        assert_eq!(safe_name("..."), "file");
        assert_eq!(safe_name("C:\\x.png"), "C__x.png");
        assert_eq!(safe_name(&"a".repeat(500)).len(), 200);
    }
}
