//! Trial and server processes: spawning, reading the protocol from stdout, and finding the
//! orphans a killed runner left behind.

use std::fs::{self, File};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::Sender;
use std::thread::JoinHandle;

use flywheel_core::api::Report;
use flywheel_core::protocol::Message;

use crate::Error;

/// A report line read from a trial's stdout.
pub struct TrialReport {
    pub trial: String,
    pub report: Report,
}

/// A running trial process.
pub struct TrialProcess {
    pub child: Child,
    reader: Option<JoinHandle<()>>,
    pid_file: PathBuf,
}

impl TrialProcess {
    /// Starts `program args…` with stdout parsed for protocol messages (and copied to
    /// stdout.log) and stderr sent to stderr.log.
    pub fn spawn(
        program: &Path,
        args: &[String],
        trial: &str,
        dir: &Path,
        env: &[(String, String)],
        reports: Sender<TrialReport>,
    ) -> Result<Self, Error> {
        let write_error = |source| Error::Write {
            path: dir.to_path_buf(),
            source,
        };
        fs::create_dir_all(dir).map_err(write_error)?;
        let stderr = File::create(dir.join("stderr.log")).map_err(write_error)?;
        let mut stdout_log = File::create(dir.join("stdout.log")).map_err(write_error)?;
        let mut child = Command::new(program)
            .args(args)
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .map_err(|source| Error::Spawn {
                program: program.to_path_buf(),
                source,
            })?;
        let pid_file = dir.join("pid");
        super::store::write_atomic(&pid_file, child.id().to_string().as_bytes())?;
        let stdout = child.stdout.take();
        let trial = trial.to_string();
        let reader = std::thread::spawn(move || {
            let Some(stdout) = stdout else { return };
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let _ = writeln!(stdout_log, "{line}");
                if let Some(Message::Report(report)) = Message::parse_line(&line) {
                    // The runner may have stopped listening (it is shutting down); the log
                    // still has the line.
                    let _ = reports.send(TrialReport {
                        trial: trial.clone(),
                        report,
                    });
                }
            }
        });
        Ok(Self {
            child,
            reader: Some(reader),
            pid_file,
        })
    }

    /// The exit code once the process has ended, after every stdout line was read.
    pub fn try_finish(&mut self) -> Option<Option<i32>> {
        match self.child.try_wait() {
            Ok(Some(status)) => {
                self.join_reader();
                let _ = fs::remove_file(&self.pid_file);
                Some(status.code())
            }
            Ok(None) => None,
            Err(_) => {
                self.join_reader();
                Some(None)
            }
        }
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.join_reader();
        let _ = fs::remove_file(&self.pid_file);
    }

    fn join_reader(&mut self) {
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
    }
}

/// Whether a process with this pid exists (Linux `/proc`).
pub fn is_alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
        && !fs::read_to_string(format!("/proc/{pid}/stat"))
            .is_ok_and(|stat| stat.split_whitespace().nth(2) == Some("Z"))
}

/// The process's command line, arguments joined by spaces.
pub fn command_line(pid: u32) -> Option<String> {
    fs::read(format!("/proc/{pid}/cmdline"))
        .ok()
        .map(|raw| String::from_utf8_lossy(&raw).replace('\0', " "))
}

/// Ends a trial process a killed runner left behind. The pid file alone is not trusted — pids
/// are reused — so the process must still carry the trial's `--trial=` argument.
pub fn kill_orphan(trial: &str, dir: &Path) -> bool {
    let pid_file = dir.join("pid");
    let Some(pid) = fs::read_to_string(&pid_file)
        .ok()
        .and_then(|text| text.trim().parse::<u32>().ok())
    else {
        return false;
    };
    let _ = fs::remove_file(&pid_file);
    let marker = format!("--trial={trial}");
    if !is_alive(pid) || !command_line(pid).is_some_and(|cmd| cmd.contains(&marker)) {
        return false;
    }
    let killed = Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .status()
        .is_ok_and(|status| status.success());
    for _ in 0..100 {
        if !is_alive(pid) {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    killed
}
