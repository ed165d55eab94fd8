//! Child processes that never outlive the test binary.
//!
//! Three layers, because a test can end in three ways:
//! - normal drop of an owned control plane: kill its process group and wait ([`ManagedProcess`]);
//! - a shared control plane (a `static`, never dropped) at normal exit: an `atexit` hook kills what
//!   was registered and removes its directories;
//! - the test binary killed or aborted: every child gets `PR_SET_PDEATHSIG = SIGKILL`. That signal
//!   follows the *thread* that forked, so all children are spawned by one keeper thread that lives
//!   as long as the process.
#![allow(unsafe_code)] // pre_exec/prctl/killpg/atexit: the only way to tie children to our lifetime.

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Mutex, OnceLock};

use std::os::unix::process::CommandExt;

type SpawnReply = mpsc::Sender<io::Result<Child>>;

fn keeper() -> &'static Mutex<mpsc::Sender<(Command, SpawnReply)>> {
    static KEEPER: OnceLock<Mutex<mpsc::Sender<(Command, SpawnReply)>>> = OnceLock::new();
    KEEPER.get_or_init(|| {
        let (requests, inbox) = mpsc::channel::<(Command, SpawnReply)>();
        std::thread::Builder::new()
            .name("process-keeper".into())
            .spawn(move || {
                for (mut command, reply) in inbox {
                    let _ = reply.send(command.spawn());
                }
                // The sender lives in a static, so this loop (and thread) only ends with the process.
            })
            .expect("cannot start the process keeper thread");
        register_exit_hook();
        Mutex::new(requests)
    })
}

/// A running child in its own process group, with its output in a log file.
#[derive(Debug)]
pub struct ManagedProcess {
    name: String,
    child: Child,
    log: PathBuf,
}

impl ManagedProcess {
    /// Start `program args...` with stdout and stderr appended to `log`.
    pub fn spawn(name: &str, program: &Path, args: &[String], log: &Path) -> io::Result<Self> {
        let out = File::options().create(true).append(true).open(log)?;
        let err = out.try_clone()?;
        let mut command = Command::new(program);
        command
            .args(args)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .process_group(0);
        // SAFETY: prctl is async-signal-safe and touches no memory of the parent.
        unsafe {
            command.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong) != 0 {
                    return Err(io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let (reply, answer) = mpsc::channel();
        keeper()
            .lock()
            .map_err(|_| io::Error::other("process keeper poisoned"))?
            .send((command, reply))
            .map_err(|_| io::Error::other("process keeper gone"))?;
        let child = answer
            .recv()
            .map_err(|_| io::Error::other("process keeper gone"))??;
        Ok(Self {
            name: name.to_string(),
            child,
            log: log.to_path_buf(),
        })
    }

    /// Process id (also the process group id).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether the process has exited.
    pub fn has_exited(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(Some(_)))
    }

    /// Its exit status, once it has exited.
    pub fn exit_status(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// Send `signal` (e.g. `libc::SIGSTOP`, `libc::SIGCONT`, `libc::SIGTERM`) to the process.
    pub fn signal(&self, signal: libc::c_int) -> io::Result<()> {
        let pid = libc::pid_t::try_from(self.child.id()).map_err(io::Error::other)?;
        // SAFETY: plain syscall on a child we started and still own (not yet reaped).
        if unsafe { libc::kill(pid, signal) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// The last `lines` lines of its log, for failure messages.
    pub fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        let start = all.len().saturating_sub(lines);
        format!(
            "--- last lines of {} ({}) ---\n{}",
            self.name,
            self.log.display(),
            all[start..].join("\n")
        )
    }

    /// Kill the whole process group and reap the child.
    pub fn kill(&mut self) {
        kill_group(self.child.id());
        let _ = self.child.wait();
    }
}

impl Drop for ManagedProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

fn kill_group(pid: u32) {
    if let Ok(pgid) = libc::pid_t::try_from(pid) {
        // SAFETY: plain syscall on a process group we created.
        unsafe {
            libc::killpg(pgid, libc::SIGKILL);
        }
    }
}

/// What the exit hook cleans: process groups and directories of shared (static) control planes.
#[derive(Default)]
struct ExitCleanup {
    pids: Vec<u32>,
    dirs: Vec<PathBuf>,
}

fn exit_cleanup() -> &'static Mutex<ExitCleanup> {
    static CLEANUP: OnceLock<Mutex<ExitCleanup>> = OnceLock::new();
    CLEANUP.get_or_init(Mutex::default)
}

/// Kill `pid`'s group when the test binary exits normally.
pub fn kill_at_exit(pid: u32) {
    if let Ok(mut cleanup) = exit_cleanup().lock() {
        cleanup.pids.push(pid);
    }
}

/// Remove `dir` when the test binary exits normally (after the processes are killed).
pub fn remove_at_exit(dir: &Path) {
    if let Ok(mut cleanup) = exit_cleanup().lock() {
        cleanup.dirs.push(dir.to_path_buf());
    }
}

extern "C" fn run_exit_cleanup() {
    if let Ok(cleanup) = exit_cleanup().lock() {
        for pid in &cleanup.pids {
            kill_group(*pid);
        }
        for dir in &cleanup.dirs {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

fn register_exit_hook() {
    // SAFETY: registers a plain extern "C" function; it only kills processes and removes files.
    unsafe {
        libc::atexit(run_exit_cleanup);
    }
}
