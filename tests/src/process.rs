//! Child-process helpers: spawning servers that cannot outlive the test
//! process, and sending them signals.

use std::io;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command};
use std::sync::mpsc;
use std::sync::OnceLock;
use std::thread;
use std::time::{Duration, Instant};

/// A request to the spawner thread: the command to spawn and where to send
/// the result.
type SpawnRequest = (Command, mpsc::Sender<io::Result<Child>>);

/// Spawns `cmd` so that the child gets `SIGKILL` when the test process dies,
/// however it dies (panic with `panic = "abort"`, a signal, a timeout in the
/// test runner...).
///
/// This uses `PR_SET_PDEATHSIG`, which fires when the *thread* that forked
/// the child exits, not the process. Children are therefore forked from one
/// dedicated thread that lives as long as the process, so that a server
/// started from a short-lived test thread (or moved between threads) is not
/// killed early.
pub(crate) fn spawn_tied_to_process(cmd: Command) -> io::Result<Child> {
    static SPAWNER: OnceLock<mpsc::Sender<SpawnRequest>> = OnceLock::new();

    let spawner = SPAWNER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<SpawnRequest>();
        let spawned = thread::Builder::new()
            .name("tether-e2e-spawner".into())
            .spawn(move || {
                // The sender is in a static and never dropped, so this loop
                // (and the thread) only ends when the process exits.
                for (mut cmd, reply) in rx {
                    let _ = reply.send(spawn_with_pdeathsig(&mut cmd));
                }
            });
        if let Err(e) = spawned {
            // Leave a sender whose receiver is gone: every spawn then fails
            // with a clear error below instead of panicking here.
            eprintln!("tether-e2e: cannot start the spawner thread: {e}");
        }
        tx
    });

    let (reply_tx, reply_rx) = mpsc::channel();
    spawner
        .send((cmd, reply_tx))
        .map_err(|_| io::Error::other("tether-e2e spawner thread is not running"))?;
    reply_rx
        .recv()
        .map_err(|_| io::Error::other("tether-e2e spawner thread did not answer"))?
}

fn spawn_with_pdeathsig(cmd: &mut Command) -> io::Result<Child> {
    // SAFETY: getpid is async-signal-safe and has no preconditions.
    let parent = unsafe { libc::getpid() };
    // SAFETY: the closure runs in the forked child before exec and only calls
    // async-signal-safe functions (prctl, getppid, _exit); it allocates
    // nothing and touches no locks.
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(io::Error::last_os_error());
            }
            // The parent may have died between fork and prctl.
            if libc::getppid() != parent {
                libc::_exit(1);
            }
            Ok(())
        });
    }
    cmd.spawn()
}

/// Sends `signal` to the child, unless it has already been reaped.
pub(crate) fn signal(child: &mut Child, signal: libc::c_int) -> io::Result<()> {
    if child.try_wait()?.is_some() {
        return Ok(());
    }
    let pid = libc::pid_t::try_from(child.id())
        .map_err(|_| io::Error::other(format!("pid {} out of range", child.id())))?;
    // SAFETY: plain syscall. The child has not been reaped (try_wait above
    // returned None and we hold `&mut Child`), so the pid cannot have been
    // reused by another process.
    if unsafe { libc::kill(pid, signal) } != 0 {
        let err = io::Error::last_os_error();
        if err.raw_os_error() != Some(libc::ESRCH) {
            return Err(err);
        }
    }
    Ok(())
}

/// Waits up to `timeout` for the child to exit. Returns whether it exited.
pub(crate) fn wait_timeout(child: &mut Child, timeout: Duration) -> io::Result<bool> {
    let deadline = Instant::now() + timeout;
    loop {
        if child.try_wait()?.is_some() {
            return Ok(true);
        }
        if Instant::now() >= deadline {
            return Ok(false);
        }
        thread::sleep(Duration::from_millis(10));
    }
}

/// Stops the child: `SIGTERM`, wait up to `grace`, then `SIGKILL` and reap.
/// Returns whether the child exited on its own within the grace period.
pub(crate) fn terminate(child: &mut Child, grace: Duration) -> io::Result<bool> {
    signal(child, libc::SIGTERM)?;
    if wait_timeout(child, grace)? {
        return Ok(true);
    }
    kill(child)?;
    Ok(false)
}

/// Kills the child with `SIGKILL` and reaps it.
pub(crate) fn kill(child: &mut Child) -> io::Result<()> {
    signal(child, libc::SIGKILL)?;
    child.wait()?;
    Ok(())
}
