//! The real targets and initiators the export tests drive: a private `tgtd` per test on
//! free ports (stopped by a Drop guard, even when the test fails), and `iscsi_rw`, a tiny
//! libiscsi initiator compiled once into the target directory.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// How long a tgtd may take to start or stop.
const DEADLINE: Duration = Duration::from_secs(20);

/// Whether `program` is on the PATH.
pub fn installed(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|dir| dir.join(program).is_file()))
}

/// A tgtd of the test's own, on its own control port and portal.
pub struct Tgtd {
    pub control_port: u16,
    pub portal_port: u16,
    child: Option<Child>,
}

impl Tgtd {
    /// Starts one, or says why the test is skipped (tgt not installed) and returns `None`.
    pub fn start() -> Option<Tgtd> {
        if !installed("tgtd") || !installed("tgtadm") {
            eprintln!("SKIPPED: tgtd or tgtadm missing (install the Debian package tgt)");
            return None;
        }
        let mut tgtd = Tgtd { control_port: unused_control_port(), portal_port: free_port(), child: None };
        tgtd.launch();
        Some(tgtd)
    }

    fn launch(&mut self) {
        let portal = format!("portal=127.0.0.1:{}", self.portal_port);
        let child = Command::new("tgtd")
            .args(["-f", "--iscsi", &portal, "-C", &self.control_port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("tgtd starts");
        self.child = Some(child);
        let deadline = Instant::now() + DEADLINE;
        while !(self.tgtadm(&["--op", "show", "--mode", "sys"]).status.success()
            && std::net::TcpStream::connect(("127.0.0.1", self.portal_port)).is_ok())
        {
            assert!(Instant::now() < deadline, "tgtd did not start on control port {}", self.control_port);
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Runs `tgtadm -C <port> --lld iscsi <args>`.
    pub fn tgtadm(&self, args: &[&str]) -> Output {
        Command::new("tgtadm")
            .args(["-C", &self.control_port.to_string(), "--lld", "iscsi"])
            .args(args)
            .output()
            .expect("tgtadm runs")
    }

    /// `tgtadm --op show --mode target`.
    pub fn show(&self) -> String {
        String::from_utf8_lossy(&self.tgtadm(&["--op", "show", "--mode", "target"]).stdout).into_owned()
    }

    /// Stops the daemon (it ignores SIGTERM): its targets deleted (it refuses to stop while
    /// it has any), `--op delete --mode system`, then SIGKILL if it is still there at the
    /// deadline.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else { return };
        for line in self.show().lines() {
            let tid = line.strip_prefix("Target ").and_then(|rest| rest.split(':').next());
            if let Some(tid) = tid {
                let _ = self.tgtadm(&["--op", "delete", "--mode", "target", "--tid", tid, "--force"]);
            }
        }
        // The system mode takes no `--lld`.
        let port = self.control_port.to_string();
        let _ = Command::new("tgtadm").args(["-C", &port, "--op", "delete", "--mode", "system"]).output();
        let deadline = Instant::now() + DEADLINE;
        while child.try_wait().ok().flatten().is_none() {
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        // tgtd leaves its control socket and lock file behind.
        for suffix in ["", ".lock"] {
            let _ = std::fs::remove_file(format!("/var/run/tgtd/socket.{}{suffix}", self.control_port));
        }
    }

    /// Stops it and starts a fresh one on the same ports: every target is gone.
    pub fn restart(&mut self) {
        self.stop();
        self.launch();
    }
}

impl Drop for Tgtd {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A tgtd control port no daemon uses now. Control ports name a unix socket
/// (`/var/run/tgtd/socket.<n>`), and tgtadm takes them up to 32767.
pub fn unused_control_port() -> u16 {
    loop {
        let port = free_port() % 30_000 + 1_000;
        if !Path::new(&format!("/var/run/tgtd/socket.{port}")).exists() {
            return port;
        }
    }
}

/// A TCP port free right now on loopback.
pub fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("address").port()
}

/// The compiled initiator, or `None` (and a message) without cc or libiscsi-dev.
pub fn initiator_tool() -> Option<&'static Path> {
    static TOOL: OnceLock<Option<PathBuf>> = OnceLock::new();
    TOOL.get_or_init(|| {
        if !installed("cc") || !Path::new("/usr/include/iscsi/iscsi.h").exists() {
            eprintln!("SKIPPED: cc or libiscsi headers missing (install the Debian package libiscsi-dev)");
            return None;
        }
        let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/targets/iscsi_rw.c");
        let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join("iscsi_rw");
        let tmp = out.with_extension(format!("{}.tmp", std::process::id()));
        let built =
            Command::new("cc").arg("-O").arg("-o").arg(&tmp).arg(&source).arg("-liscsi").output().unwrap();
        assert!(
            built.status.success(),
            "iscsi_rw does not build: {}",
            String::from_utf8_lossy(&built.stderr)
        );
        std::fs::rename(&tmp, &out).unwrap();
        Some(out)
    })
    .as_deref()
}

/// Who logs in, and with which credentials.
pub struct Login<'a> {
    pub portal: &'a str,
    pub target: &'a str,
    pub initiator: &'a str,
    pub user: &'a str,
    pub password: &'a str,
}

/// What `iscsi_rw` did: its exit status and error output.
pub struct Outcome {
    pub code: Option<i32>,
    pub stderr: String,
}

impl Outcome {
    pub fn ok(&self) -> bool {
        self.code == Some(0)
    }
}

impl Login<'_> {
    fn run(&self, tool: &Path, op: &[&str]) -> Outcome {
        let out = Command::new(tool)
            .args([self.portal, self.target, self.initiator, self.user, self.password])
            .args(op)
            .output()
            .expect("iscsi_rw runs");
        Outcome { code: out.status.code(), stderr: String::from_utf8_lossy(&out.stderr).into_owned() }
    }

    /// Logs in and holds the session until [`Held::read`].
    pub fn hold(&self, tool: &Path) -> Held {
        let mut child = Command::new(tool)
            .args([self.portal, self.target, self.initiator, self.user, self.password, "hold"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("iscsi_rw runs");
        let mut line = String::new();
        let stdout = child.stdout.as_mut().expect("stdout");
        std::io::BufRead::read_line(&mut std::io::BufReader::new(stdout), &mut line).unwrap();
        assert_eq!(line.trim(), "ready", "the login failed");
        Held { child }
    }

    /// Writes `data` at the start of LUN 1.
    pub fn write(&self, tool: &Path, scratch: &Path, data: &[u8]) -> Outcome {
        let file = scratch.join(format!("out-{}", uuid::Uuid::new_v4()));
        std::fs::write(&file, data).unwrap();
        self.run(tool, &["write", file.to_str().unwrap()])
    }

    /// Reads `len` bytes from the start of LUN 1.
    pub fn read(&self, tool: &Path, scratch: &Path, len: usize) -> (Outcome, Vec<u8>) {
        let file = scratch.join(format!("in-{}", uuid::Uuid::new_v4()));
        let outcome = self.run(tool, &["read", &len.to_string(), file.to_str().unwrap()]);
        let data = std::fs::read(&file).unwrap_or_default();
        (outcome, data)
    }
}

/// A logged-in initiator waiting to read (killed if dropped unused).
pub struct Held {
    child: Child,
}

impl Drop for Held {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Held {
    /// Reads a block through the held session, then logs out; killed past the deadline.
    pub fn read(mut self) -> Outcome {
        use std::io::{Read, Write};
        self.child.stdin.take().expect("stdin").write_all(b"go\n").unwrap();
        let deadline = Instant::now() + DEADLINE;
        let status = loop {
            if let Some(status) = self.child.try_wait().expect("iscsi_rw") {
                break status;
            }
            if Instant::now() >= deadline {
                let _ = self.child.kill();
                panic!("the held initiator hangs");
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let mut stderr = String::new();
        self.child.stderr.take().expect("stderr").read_to_string(&mut stderr).unwrap();
        Outcome { code: status.code(), stderr }
    }
}
