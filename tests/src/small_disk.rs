//! A small file system of its own, for store-fault tests: a `tmpfs` mounted in a private mount
//! namespace (`unshare --mount --map-root-user`: no root needed where user namespaces are allowed),
//! reached from outside through `/proc/PID/root`. It can be filled to the last byte, freed again,
//! and remounted read-only and back; nothing outside the namespace sees the mount.

use std::fs::File;
use std::io::{self, BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};

/// The holder process: mounts the tmpfs, says `ready`, then obeys `ro`/`rw` lines on stdin
/// until stdin closes.
const HOLDER: &str = r#"
mount -t tmpfs -o "size=$1k,mode=0700" tether-small-disk "$0" || exit 1
echo ready
while read -r cmd; do
  case "$cmd" in
    ro) mount -o remount,ro "$0" && echo ok || echo failed ;;
    rw) mount -o remount,rw "$0" && echo ok || echo failed ;;
  esac
done
"#;

/// A private tmpfs of a fixed size. Dropping it ends the namespace and the file system with it.
pub struct SmallDisk {
    holder: Child,
    stdin: Option<ChildStdin>,
    stdout: BufReader<ChildStdout>,
    mount: PathBuf,
    _dir: tempfile::TempDir,
}

impl SmallDisk {
    /// Mounts a tmpfs of `size_kib` KiB. Panics with the reason if this machine cannot (no
    /// `unshare`, or user namespaces disabled): the tests that need it cannot run without it.
    pub fn new(size_kib: u64) -> SmallDisk {
        let dir = tempfile::Builder::new()
            .prefix("tether-small-disk-")
            .tempdir()
            .expect("temp dir");
        let mount = dir.path().to_path_buf();
        let mut holder = Command::new("unshare")
            .args(["--mount", "--map-root-user", "sh", "-c", HOLDER])
            .arg(&mount)
            .arg(size_kib.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn unshare (util-linux)");
        let stdin = holder.stdin.take();
        let mut stdout = BufReader::new(holder.stdout.take().expect("piped stdout"));
        let mut line = String::new();
        stdout.read_line(&mut line).expect("read from the holder");
        assert_eq!(
            line.trim(),
            "ready",
            "could not mount a private tmpfs (are user namespaces allowed?)"
        );
        SmallDisk {
            holder,
            stdin,
            stdout,
            mount,
            _dir: dir,
        }
    }

    /// The file system's root inside the namespace: for programs run under [`Self::enter`].
    pub fn mount_point(&self) -> &std::path::Path {
        &self.mount
    }

    /// A command prefix that runs a program inside the namespace, where [`Self::mount_point`] is
    /// the small file system. (SQLite resolves symbolic links in a database path, so it cannot
    /// reach the file system through [`Self::path`].)
    pub fn enter(&self) -> Vec<String> {
        vec![
            "nsenter".into(),
            format!("--target={}", self.holder.id()),
            "--user".into(),
            "--mount".into(),
            "--preserve-credentials".into(),
            "--".into(),
        ]
    }

    /// The file system's root as seen from outside the namespace (through `/proc/PID/root`), for
    /// plain file operations.
    pub fn path(&self) -> PathBuf {
        let inside = self.mount.strip_prefix("/").expect("absolute mount point");
        PathBuf::from(format!("/proc/{}/root", self.holder.id())).join(inside)
    }

    fn filler(&self) -> PathBuf {
        self.path().join("filler")
    }

    /// Fills every free byte with a file; returns how many bytes it took.
    pub fn fill(&self) -> u64 {
        let mut f = File::create(self.filler()).expect("create the filler");
        let block = vec![0u8; 4096];
        let mut total = 0u64;
        loop {
            match f.write(&block) {
                Ok(0) => break,
                Ok(n) => total += n as u64,
                Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => break,
                Err(e) => panic!("filling the small disk: {e}"),
            }
        }
        // Whatever is left is smaller than a page: take it byte by byte.
        while let Ok(n) = f.write(&block[..1]) {
            if n == 0 {
                break;
            }
            total += 1;
        }
        total
    }

    /// Deletes the filler.
    pub fn free(&self) {
        match std::fs::remove_file(self.filler()) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => panic!("removing the filler: {e}"),
        }
    }

    /// Remounts the file system read-only (`true`) or read-write. Fails (panics) while a file
    /// is open for writing on it, as the kernel refuses that.
    pub fn set_read_only(&mut self, ro: bool) {
        let stdin = self.stdin.as_mut().expect("holder stdin");
        writeln!(stdin, "{}", if ro { "ro" } else { "rw" }).expect("write to the holder");
        stdin.flush().expect("flush");
        let mut line = String::new();
        self.stdout
            .read_line(&mut line)
            .expect("read from the holder");
        assert_eq!(
            line.trim(),
            "ok",
            "remount {}",
            if ro { "ro" } else { "rw" }
        );
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        drop(self.stdin.take());
        let _ = self.holder.kill();
        let _ = self.holder.wait();
    }
}
