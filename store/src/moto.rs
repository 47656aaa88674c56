//! A real S3 API for tests: `moto_server` (PyPI `moto[server]`, installed into `.venv` by
//! scripts/setup-python.sh) on a free port of 127.0.0.1, stopped when the handle drops.
//!
//! Tests never change their own environment (edition 2024 makes `set_var` unsafe, and tests run
//! in parallel threads): they pass [`MotoServer::env`] to the child processes they start, or use
//! [`MotoServer::store`] in-process.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::Store;

/// The credentials moto accepts (any); the region is one S3 knows.
pub const ACCESS_KEY_ID: &str = "flywheel-test";
pub const SECRET_ACCESS_KEY: &str = "flywheel-test-secret";
pub const REGION: &str = "us-east-1";

/// A running moto_server; killed on drop.
pub struct MotoServer {
    child: Child,
    port: u16,
}

/// Every variable the AWS SDKs read S3 settings or credentials from.
const AWS_VARIABLES: [&str; 10] = [
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_REGION",
    "AWS_DEFAULT_REGION",
    "AWS_ENDPOINT_URL",
    "AWS_PROFILE",
    "AWS_WEB_IDENTITY_TOKEN_FILE",
    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
    "AWS_CONTAINER_CREDENTIALS_FULL_URI",
];

/// Gives `command` exactly the S3 settings `env` (e.g. [`MotoServer::env`], or none): nothing
/// from the environment the tests run in, so a developer's own credentials never leak in.
pub fn with_s3_env<'a>(command: &'a mut Command, env: &[(String, String)]) -> &'a mut Command {
    for key in AWS_VARIABLES {
        command.env_remove(key);
    }
    command.envs(env.iter().map(|(k, v)| (k, v)))
}

/// The repository root (this crate lives in `<root>/store`).
pub fn repo_root() -> PathBuf {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().map(PathBuf::from).unwrap_or(manifest)
}

impl MotoServer {
    /// Starts moto_server and waits until it answers. Fails the test (never skips it) when the
    /// virtual environment lacks moto.
    pub fn start() -> MotoServer {
        let binary = repo_root().join(".venv/bin/moto_server");
        assert!(
            binary.exists(),
            "{} not found: run scripts/setup-python.sh (it installs moto[server] from \
             scripts/requirements-test.txt into .venv; scripts/test.sh runs it first)",
            binary.display()
        );
        let port = free_port();
        let child = Command::new(&binary)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("failed to start {}: {e}", binary.display()));
        let mut server = MotoServer { child, port };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = server.child.try_wait().expect("poll moto_server") {
                panic!(
                    "moto_server exited with {status} before answering: rerun \
                     scripts/setup-python.sh"
                );
            }
            if server.request("GET", "/", b"").is_some() {
                return server;
            }
            assert!(
                Instant::now() < deadline,
                "moto_server did not answer on 127.0.0.1:{port} within 60 s"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The environment a child process needs to use this server as its S3.
    pub fn env(&self) -> Vec<(String, String)> {
        vec![
            ("AWS_ACCESS_KEY_ID".into(), ACCESS_KEY_ID.into()),
            ("AWS_SECRET_ACCESS_KEY".into(), SECRET_ACCESS_KEY.into()),
            ("AWS_REGION".into(), REGION.into()),
            ("AWS_ENDPOINT_URL".into(), self.endpoint()),
        ]
    }

    /// A store configured for this server (explicitly, not from the environment).
    pub fn store(&self) -> Store {
        Store::with_s3_options(self.env().into_iter().map(|(k, v)| (k.to_lowercase(), v)))
            .expect("moto store options")
    }

    /// Creates `bucket` (a plain S3 `PUT /bucket`; moto needs no signature for it).
    pub fn create_bucket(&self, bucket: &str) {
        let status = self
            .request("PUT", &format!("/{bucket}"), b"")
            .unwrap_or_else(|| panic!("moto_server on port {} stopped answering", self.port));
        assert!(
            (200..300).contains(&status),
            "creating bucket {bucket} answered {status}"
        );
    }

    /// One HTTP/1.1 request; the status code, or `None` when nothing answers.
    fn request(&self, method: &str, path: &str, body: &[u8]) -> Option<u16> {
        let mut stream = TcpStream::connect(("127.0.0.1", self.port)).ok()?;
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .ok()?;
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nContent-Length: {}\r\n\
             Connection: close\r\n\r\n",
            self.port,
            body.len()
        );
        stream.write_all(head.as_bytes()).ok()?;
        stream.write_all(body).ok()?;
        let mut response = Vec::new();
        stream.read_to_end(&mut response).ok()?;
        let text = String::from_utf8_lossy(&response);
        text.split_whitespace().nth(1)?.parse().ok()
    }
}

impl Drop for MotoServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    listener.local_addr().expect("local addr").port()
}
