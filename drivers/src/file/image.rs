//! Image files: running `qemu-img` without blocking the runtime, and reading the few
//! header fields the driver needs (virtual size, backing file) without spawning it.

use std::ffi::{OsStr, OsString};
use std::fs;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::process::Command;

use crate::error::{DriverError, Result};

/// The on-disk format of a backend's images.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ImageFormat {
    /// Thin, with backing files: volumes from snapshots are overlays.
    #[default]
    Qcow2,
    /// Sparse raw files: every copy is a full copy.
    Raw,
}

impl ImageFormat {
    pub fn as_str(self) -> &'static str {
        match self {
            ImageFormat::Qcow2 => "qcow2",
            ImageFormat::Raw => "raw",
        }
    }
}

/// What the driver reads from an image's header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Header {
    pub virtual_size: u64,
    /// The backing file exactly as recorded (the driver records bare names).
    pub backing_file: Option<String>,
}

const QCOW2_MAGIC: &[u8; 4] = b"QFI\xfb";

/// Reads an image's header. The format is the backend's, never probed from the data: a
/// guest can write a qcow2 header into a raw volume. Blocking.
pub(crate) fn read_header(path: &Path, format: ImageFormat) -> io::Result<Header> {
    let mut file = fs::File::open(path)?;
    if format == ImageFormat::Raw {
        return Ok(Header { virtual_size: file.metadata()?.len(), backing_file: None });
    }
    // The qcow2 header: magic, version, backing_file_offset (u64), backing_file_size (u32),
    // cluster_bits (u32), size (u64), all big-endian.
    let mut head = [0u8; 32];
    file.read_exact(&mut head)?;
    if &head[0..4] != QCOW2_MAGIC {
        return Err(io::Error::new(io::ErrorKind::InvalidData, "not a qcow2 image"));
    }
    let backing_offset = u64::from_be_bytes(field(&head[8..16]));
    let backing_len = u32::from_be_bytes(field(&head[16..20]));
    let virtual_size = u64::from_be_bytes(field(&head[24..32]));
    let backing_file = if backing_offset == 0 || backing_len == 0 {
        None
    } else if backing_len > 1023 {
        return Err(io::Error::new(io::ErrorKind::InvalidData, "qcow2 backing file name too long"));
    } else {
        let mut name = vec![0u8; backing_len as usize];
        file.seek(SeekFrom::Start(backing_offset))?;
        file.read_exact(&mut name)?;
        Some(String::from_utf8_lossy(&name).into_owned())
    };
    Ok(Header { virtual_size, backing_file })
}

fn field<const N: usize>(bytes: &[u8]) -> [u8; N] {
    let mut out = [0u8; N];
    out.copy_from_slice(&bytes[..N]);
    out
}

/// Runs a blocking file-system closure on the blocking pool.
pub(crate) async fn blocking<T, F>(context: &'static str, path: &Path, f: F) -> Result<T>
where
    F: FnOnce() -> io::Result<T> + Send + 'static,
    T: Send + 'static,
{
    match tokio::task::spawn_blocking(f).await {
        Ok(result) => result.map_err(|e| DriverError::io(context, path, e)),
        Err(e) => Err(DriverError::Backend(format!("{context} {}: task failed: {e}", path.display()))),
    }
}

/// Runs a program to completion and returns its stdout; failures become `DriverError`s
/// whose kind says whether to retry (a held image lock is `Busy`, a full disk `NoSpace`).
/// No deadline: for the calls whose time no option bounds (`--version` at setup).
pub(crate) async fn run<S: AsRef<OsStr>>(program: &'static str, args: &[S]) -> Result<Vec<u8>> {
    run_inner(program, args, None).await
}

/// [`run`] for a command that can hang (a control socket whose daemon is stopped, a daemon
/// that never gets ready, a `qemu-img` stuck on a dead NFS server): past `deadline` the
/// child and everything it started (its process group) are killed, the child is reaped,
/// and the call fails as `Timeout`.
pub(crate) async fn run_within<S: AsRef<OsStr>>(
    program: &'static str,
    args: &[S],
    deadline: Duration,
) -> Result<Vec<u8>> {
    run_inner(program, args, Some(deadline)).await
}

/// Reads a child's pipe to its end (nothing when it was not piped).
async fn read_all<R: tokio::io::AsyncRead + Unpin>(
    pipe: Option<&mut R>,
    into: &mut Vec<u8>,
) -> io::Result<()> {
    use tokio::io::AsyncReadExt;
    match pipe {
        Some(p) => p.read_to_end(into).await.map(drop),
        None => Ok(()),
    }
}

/// The Debian package that installs a program the driver runs.
pub(crate) fn package_of(program: &str) -> &'static str {
    match program {
        "tgtadm" | "tgtd" => "tgt",
        _ => "qemu-utils",
    }
}

async fn run_inner<S: AsRef<OsStr>>(
    program: &'static str,
    args: &[S],
    deadline: Option<Duration>,
) -> Result<Vec<u8>> {
    let mut command = Command::new(program);
    command.args(args).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).kill_on_drop(true);
    // A process group of its own, so a deadline kills what the child started too (a
    // wrapper script's children, a helper qemu-img forked).
    command.process_group(0);
    // The child dies with this process: after a crash, an orphaned qemu-img would go on
    // holding the image's lock (and writing it) while the restarted process runs the step
    // again.
    let parent = rustix::process::getpid();
    // SAFETY: the closure runs in the forked child before exec and only makes two
    // async-signal-safe system calls (prctl, getppid); it allocates nothing. This is
    // one of the two unsafe blocks of the workspace (the other is malloc_trim in src/server.rs):
    // std has no safe way to ask for a death signal.
    #[allow(unsafe_code)]
    unsafe {
        command.pre_exec(move || {
            rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::KILL))?;
            if rustix::process::getppid() != Some(parent) {
                // The parent died before the signal was armed.
                return Err(io::Error::from(io::ErrorKind::BrokenPipe));
            }
            Ok(())
        });
    }
    let output = match deadline {
        None => command.output().await,
        Some(limit) => match command.spawn() {
            Err(e) => Err(e),
            Ok(mut child) => {
                let (mut out, mut err) = (child.stdout.take(), child.stderr.take());
                let collect = async {
                    let (mut stdout, mut stderr) = (Vec::new(), Vec::new());
                    let (read_out, read_err, status) = tokio::join!(
                        read_all(out.as_mut(), &mut stdout),
                        read_all(err.as_mut(), &mut stderr),
                        child.wait()
                    );
                    read_out?;
                    read_err?;
                    Ok(std::process::Output { status: status?, stdout, stderr })
                };
                let finished = tokio::time::timeout(limit, collect).await;
                match finished {
                    Ok(output) => output,
                    Err(_) => {
                        // The child's whole process group, then the child reaped here, so
                        // nothing it started runs on and nothing is left a zombie.
                        if let Some(group) = child.id().and_then(|p| rustix::process::Pid::from_raw(p as i32))
                        {
                            let _ = rustix::process::kill_process_group(group, rustix::process::Signal::KILL);
                        }
                        let _ = child.kill().await;
                        tracing::warn!(
                            program,
                            deadline_s = limit.as_secs_f64(),
                            "command killed at its deadline"
                        );
                        return Err(DriverError::Timeout(format!(
                            "{program} did not finish within {} s and was killed",
                            limit.as_secs_f64()
                        )));
                    }
                }
            }
        },
    };
    let output = output.map_err(|e| match e.kind() {
        io::ErrorKind::NotFound => DriverError::NotInitialized(format!(
            "{program} is not installed (install the Debian package {})",
            package_of(program)
        )),
        _ => DriverError::io("cannot run", program, e),
    })?;
    if output.status.success() {
        return Ok(output.stdout);
    }
    let stderr = String::from_utf8_lossy(&output.stderr).trim().to_owned();
    let args = args.iter().map(|a| a.as_ref().to_string_lossy()).collect::<Vec<_>>().join(" ");
    tracing::debug!(program, %args, %stderr, "command failed");
    Err(classify(program, args, output.status.to_string(), stderr))
}

fn classify(program: &'static str, args: String, status: String, stderr: String) -> DriverError {
    if stderr.contains("Failed to get") && stderr.contains("lock") {
        DriverError::Busy(format!("image in use: {stderr}"))
    } else if stderr.contains("No space left on device") {
        DriverError::NoSpace(stderr)
    } else {
        DriverError::Command { program, args, status, stderr }
    }
}

/// `qemu-img` with the cache flags a bulk copy uses: O_DIRECT on both sides (`-t none -T
/// none`) so a copy does not evict the host's page cache, unless the file system refuses it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct QemuImg {
    pub format: ImageFormat,
    pub direct_io: bool,
    /// How long one `qemu-img` call may take before it is killed (`qemu_img_timeout`);
    /// `None` waits as long as it takes.
    pub timeout: Option<Duration>,
}

impl QemuImg {
    /// Runs `qemu-img` with the backend's deadline.
    async fn run(&self, args: &[OsString]) -> Result<Vec<u8>> {
        run_inner("qemu-img", args, self.timeout).await
    }

    /// `qemu-img create` of a blank image, or an overlay on `backing` (a bare file name in
    /// the same directory, so the directory can be mounted elsewhere).
    pub(crate) async fn create(&self, path: &Path, size: u64, backing: Option<&str>) -> Result<()> {
        let mut args = args(["create", "-q", "-f", self.format.as_str()]);
        if let Some(backing) = backing {
            args.extend(["-b", backing, "-F", "qcow2"].map(OsString::from));
        }
        args.extend([path.into(), size.to_string().into()]);
        self.run(&args).await.map(drop)
    }

    /// A full copy of `src` (its whole backing chain flattened) into a new image `dst` of
    /// format `out`.
    pub(crate) async fn convert(&self, src: &Path, dst: &Path, out: ImageFormat) -> Result<()> {
        let options = args(["-f", self.format.as_str(), "-O", out.as_str()]);
        self.run_convert(options, src, dst).await
    }

    /// A copy of a qcow2 overlay into a new overlay on the same `backing` (a bare name):
    /// only the clusters the source holds above its backing file are copied.
    pub(crate) async fn convert_onto(&self, src: &Path, dst: &Path, backing: &str) -> Result<()> {
        let options = args(["-f", "qcow2", "-O", "qcow2", "-B", backing, "-F", "qcow2"]);
        self.run_convert(options, src, dst).await
    }

    /// `qemu-img convert`, with O_DIRECT when enabled. A file system that passed the setup
    /// probe may still refuse O_DIRECT for some request (EINVAL, on some NFS servers): the
    /// copy is then redone through the page cache rather than failed.
    async fn run_convert(&self, options: Vec<OsString>, src: &Path, dst: &Path) -> Result<()> {
        let build = |direct: bool| {
            let mut all =
                if direct { args(["convert", "-t", "none", "-T", "none"]) } else { args(["convert"]) };
            all.extend(options.iter().cloned());
            all.extend([src.into(), dst.into()]);
            all
        };
        match self.run(&build(self.direct_io)).await {
            Err(DriverError::Command { stderr, .. })
                if self.direct_io && stderr.contains("Invalid argument") =>
            {
                tracing::warn!(%stderr, "O_DIRECT copy refused; copying through the page cache");
                self.run(&build(false)).await.map(drop)
            }
            result => result.map(drop),
        }
    }

    /// A copy of a raw file into a new image of the backend's format (restores).
    pub(crate) async fn import_raw(&self, src: &Path, dst: &Path) -> Result<()> {
        let raw = QemuImg { format: ImageFormat::Raw, ..*self };
        raw.convert(src, dst, self.format).await
    }

    /// Grows an image to `size` bytes.
    pub(crate) async fn resize(&self, path: &Path, size: u64) -> Result<()> {
        let mut args = args(["resize", "-f", self.format.as_str()]);
        args.extend([path.into(), size.to_string().into()]);
        self.run(&args).await.map(drop)
    }

    /// Copies the backing file's data into a qcow2 overlay and drops the backing file
    /// (safe `qemu-img rebase -b ""`). In place and restartable: a crash leaves the
    /// overlay still backed, with some clusters already equal to the backing's.
    pub(crate) async fn flatten(&self, path: &Path) -> Result<()> {
        let mut args = args(["rebase", "-q", "-f", "qcow2", "-b", ""]);
        args.push(path.into());
        self.run(&args).await.map(drop)
    }
}

fn args<const N: usize>(words: [&str; N]) -> Vec<OsString> {
    words.into_iter().map(OsString::from).collect()
}

/// Whether the file system under `dir` accepts O_DIRECT, by opening a probe file with it;
/// blocking.
pub(crate) fn probe_direct_io(dir: &Path) -> io::Result<bool> {
    use std::os::unix::fs::OpenOptionsExt;

    let probe = dir.join(".direct-io-probe");
    let flags = rustix::fs::OFlags::DIRECT.bits() as i32;
    let opened =
        fs::OpenOptions::new().write(true).create(true).truncate(true).custom_flags(flags).open(&probe);
    let result = match opened {
        Ok(_) => Ok(true),
        Err(e) if e.raw_os_error() == Some(rustix::io::Errno::INVAL.raw_os_error()) => Ok(false),
        Err(e) => Err(e),
    };
    let _ = fs::remove_file(&probe);
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The child of `a_program_dies_with_the_process_that_ran_it`: runs a shell that writes
    /// its pid and sleeps, until the test kills this process.
    #[tokio::test]
    async fn orphan_child() {
        let Ok(pid_file) = std::env::var("EMBER_ORPHAN_PID_FILE") else { return };
        let script = format!("echo $$ > {pid_file}.tmp && mv {pid_file}.tmp {pid_file} && exec sleep 60");
        let _ = run("sh", &["-c", script.as_str()]).await;
        panic!("the sleep should outlive this process only if the death signal is missing");
    }

    #[test]
    fn a_program_dies_with_the_process_that_ran_it() {
        let dir = tempfile::tempdir().unwrap();
        let pid_file = dir.path().join("pid");
        let mut child = std::process::Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "file::image::tests::orphan_child", "--nocapture", "--test-threads=1"])
            .env("EMBER_ORPHAN_PID_FILE", &pid_file)
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        let pid = loop {
            if let Ok(text) = fs::read_to_string(&pid_file) {
                break text.trim().to_owned();
            }
            assert!(std::time::Instant::now() < deadline, "the program never started");
            std::thread::sleep(Duration::from_millis(10));
        };
        let proc_dir = Path::new("/proc").join(&pid);
        assert!(proc_dir.exists(), "the program runs");
        child.kill().unwrap();
        child.wait().unwrap();
        // Gone, or a zombie waiting for init to reap it: either way it holds no lock.
        let alive = || {
            fs::read_to_string(proc_dir.join("stat")).is_ok_and(|stat| {
                stat.rsplit(')').next().is_some_and(|rest| !rest.trim_start().starts_with('Z'))
            })
        };
        while alive() {
            assert!(std::time::Instant::now() < deadline, "the program outlived the process that ran it");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    #[tokio::test]
    async fn a_missing_program_names_its_package_and_a_hung_one_is_killed() {
        let err = run("ember-no-such-program", &["--version"]).await.unwrap_err();
        assert!(matches!(err, DriverError::NotInitialized(_)), "{err:?}");
        assert!(err.to_string().contains("not installed (install the Debian package"), "{err}");
        assert_eq!(package_of("tgtadm"), "tgt");
        assert_eq!(package_of("qemu-storage-daemon"), "qemu-utils");

        let started = std::time::Instant::now();
        let err = run_within("sleep", &["30"], Duration::from_millis(200)).await.unwrap_err();
        assert!(matches!(err, DriverError::Timeout(_)) && err.to_string().contains("killed"), "{err:?}");
        assert!(started.elapsed() < Duration::from_secs(10), "the deadline was not kept");
    }

    /// A hung command's children die with it (its process group), and nothing is left a
    /// zombie.
    #[tokio::test]
    async fn a_hung_commands_children_are_killed_and_reaped() {
        let dir = tempfile::tempdir().unwrap();
        let pid_file = dir.path().join("child.pid");
        // The shell forks `sleep` (no exec) and waits: killing only the shell would leave it.
        let script = format!("sleep 31 & echo $! > {} ; wait", pid_file.display());
        let err = run_within("sh", &["-c", script.as_str()], Duration::from_millis(300)).await.unwrap_err();
        assert!(matches!(err, DriverError::Timeout(_)), "{err:?}");
        let child: u32 = fs::read_to_string(&pid_file).unwrap().trim().parse().unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        // Gone entirely: killed, and reaped by its parent (the shell, itself reaped by tokio;
        // an orphan by init) rather than left a zombie.
        while Path::new(&format!("/proc/{child}")).exists() {
            assert!(std::time::Instant::now() < deadline, "the hung command's child {child} outlived it");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    #[test]
    fn headers_are_read_with_the_configured_format_only() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("volume-x");
        // A raw volume whose guest wrote a qcow2 magic stays raw: the format is never probed.
        let mut data = QCOW2_MAGIC.to_vec();
        data.resize(4096, 0);
        fs::write(&path, &data).unwrap();
        assert_eq!(
            read_header(&path, ImageFormat::Raw).unwrap(),
            Header { virtual_size: 4096, backing_file: None }
        );
        fs::write(&path, [0u8; 4096]).unwrap();
        let err = read_header(&path, ImageFormat::Qcow2).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData, "{err}");
        fs::write(&path, b"short").unwrap();
        assert!(read_header(&path, ImageFormat::Qcow2).is_err());
    }

    #[test]
    fn probing_o_direct_leaves_nothing_behind() {
        let dir = tempfile::tempdir().unwrap();
        probe_direct_io(dir.path()).unwrap();
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 0);
    }
}
