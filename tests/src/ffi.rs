//! Driving an app written against the generated bindings (Python or Kotlin): one process per app
//! run, speaking the line protocol of `tests/ffi/repl.py` and `tests/ffi/Repl.kt` (tab-separated
//! commands in, JSON lines out). `bindings/generate.sh` and `tests/ffi/build-kotlin.sh` prepare
//! what this runs; `.ci/run` calls both before the tests.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::Value;

use crate::tether::Running;

/// The language of the generated bindings an app is written in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lang {
    /// `tests/ffi/repl.py` over the generated `tether_ffi.py`.
    Python,
    /// `tests/ffi/Repl.kt` compiled with the generated `tether_ffi.kt`, on the JVM with JNA.
    Kotlin,
}

/// Where `bindings/generate.sh` wrote the bindings: `$TETHER_FFI_DIR`, else `ffi/` in cargo's
/// target dir (found from the test executable's path).
pub fn ffi_dir() -> PathBuf {
    if let Some(p) = std::env::var_os("TETHER_FFI_DIR") {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().expect("current_exe");
    exe.parent()
        .and_then(Path::parent)
        .and_then(Path::parent)
        .expect("target dir")
        .join("ffi")
}

fn need(path: &Path, how: &str) -> PathBuf {
    assert!(
        path.exists(),
        "{} is missing: run {how} first (`.ci/run` does)",
        path.display()
    );
    path.to_path_buf()
}

/// How long a command may take to answer. Only bounds a broken run.
const REPLY: Duration = Duration::from_secs(120);

/// One run of a test app: a process with the bindings loaded.
pub struct App {
    run: Running,
    seq: u64,
    /// The language it is written in.
    pub lang: Lang,
}

impl std::ops::Deref for App {
    type Target = Running;
    fn deref(&self) -> &Running {
        &self.run
    }
}

impl std::ops::DerefMut for App {
    fn deref_mut(&mut self) -> &mut Running {
        &mut self.run
    }
}

impl App {
    /// Starts the `lang` app on the database `db` (the app opens it when told to).
    pub fn start(lang: Lang, db: &Path) -> App {
        let dir = ffi_dir();
        let mut cmd = match lang {
            Lang::Python => {
                let module = need(&dir.join("python/tether_ffi.py"), "bindings/generate.sh");
                let mut c = Command::new("python3");
                c.arg("-u")
                    .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/ffi/repl.py"))
                    .env("PYTHONPATH", module.parent().expect("python dir"));
                c
            }
            Lang::Kotlin => {
                let jar = need(
                    &dir.join("kotlin/tether-repl.jar"),
                    "tests/ffi/build-kotlin.sh",
                );
                let jna = need(
                    Path::new("/usr/share/java/jna.jar"),
                    "apt-get install libjna-java",
                );
                let mut c = Command::new("java");
                c.arg(format!(
                    "-Djna.library.path={}",
                    dir.join("kotlin").display()
                ))
                .arg("-cp")
                .arg(format!("{}:{}", jar.display(), jna.display()))
                .arg("ReplKt");
                c
            }
        };
        // Test-only trust for the raw client; the app under test must use its own CA file.
        cmd.env_remove("SSL_CERT_FILE").arg(db);
        App {
            run: Running::spawn(cmd),
            seq: 0,
            lang,
        }
    }

    /// Sends a command and waits for its reply (which may report an error: see `ok`).
    pub fn call(&mut self, cmd: &str, args: &[&str]) -> Value {
        self.seq += 1;
        let seq = self.seq;
        let mut line = format!("{seq}\t{cmd}");
        for a in args {
            assert!(!a.contains(['\t', '\n']), "argument {a:?} cannot be sent");
            line.push('\t');
            line.push_str(a);
        }
        self.run.write_line(&line);
        match self
            .run
            .wait_after(0, REPLY, |e| e["event"] == "reply" && e["seq"] == seq)
        {
            Some((_, reply)) => reply,
            None => panic!(
                "{:?} app: no reply to {cmd} {args:?}: {}",
                self.lang,
                self.run.diagnostics()
            ),
        }
    }

    /// Like [`call`](Self::call), and the call must succeed.
    pub fn ok(&mut self, cmd: &str, args: &[&str]) -> Value {
        let reply = self.call(cmd, args);
        assert_eq!(
            reply["ok"],
            true,
            "{:?} app: {cmd} {args:?} failed: {reply}\n{}",
            self.lang,
            self.run.diagnostics()
        );
        reply
    }
}
