//! tgtd's management protocol, spoken directly on its control socket instead of spawning
//! `tgtadm` for every call (a spawn cost 10 to 15 ms on a loaded machine; a call over the
//! socket takes well under one).
//!
//! The protocol is tgt's own (`usr/tgtadm.h`, `usr/tgtadm.c`, `usr/mgmt.c`, unchanged from
//! tgt 1.0.85, Debian 12's, to 1.0.97): one request per connection to the Unix socket
//! `<TGT_IPC_SOCKET or /var/run/tgtd/socket>.<control port>`, the request a fixed
//! `struct tgtadm_req` (native byte order, as both ends are on this host) followed by
//! `key=value` parameters joined by `,` with a trailing NUL; the answer a
//! `struct tgtadm_rsp` (`err`, `len` counting itself) and, on success, `len - 8` bytes of
//! text (NUL-terminated) for the `show` operations. tgtd closes the connection after
//! answering, and admits only a peer of its own uid and gid.

use std::path::PathBuf;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

/// `TGT_LLD_NAME_LEN`.
const LLD_LEN: usize = 64;
/// `sizeof(struct tgtadm_req)` on the 64-bit ABI: 4 + 4 + 64 + 4 + 4 + 8 + 8 + 6 * 4 + 4
/// of tail padding to the 8-byte alignment of its `uint64_t` fields.
pub(crate) const REQ_LEN: usize = 120;
/// `sizeof(struct tgtadm_rsp)`.
const RSP_LEN: usize = 8;
/// tgtd's limit on a request's parameters (`MAX_MGT_BUFSIZE`).
const MAX_PARAMS: usize = 8 * 1024;
/// A bound on a `show` answer read into memory (tgtd's listing of thousands of targets
/// stays far below it).
const MAX_ANSWER: usize = 64 << 20;

/// `enum tgtadm_mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    Target = 1,
    Device = 2,
    Connection = 6,
    Account = 7,
}

/// `enum tgtadm_op`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Op {
    New = 0,
    Delete = 1,
    Show = 2,
    Bind = 3,
    Unbind = 4,
    Update = 5,
}

/// `enum tgtadm_errno`: the refusals the driver tells apart (the rest are reported by
/// their number and tgtadm's text for it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Refusal(pub u32);

impl Refusal {
    pub const NO_TARGET: Refusal = Refusal(4);
    pub const NO_SESSION: Refusal = Refusal(6);
    pub const NO_CONNECTION: Refusal = Refusal(7);
    pub const TARGET_EXIST: Refusal = Refusal(9);
    pub const LUN_EXIST: Refusal = Refusal(10);
    pub const BINDING_EXIST: Refusal = Refusal(11);
    pub const ACL_EXIST: Refusal = Refusal(12);
    pub const ACL_NOEXIST: Refusal = Refusal(13);
    pub const USER_EXIST: Refusal = Refusal(14);
    pub const NO_USER: Refusal = Refusal(15);

    /// tgtadm's message for the code (`tgtadm_strerror`).
    pub(crate) fn message(self) -> &'static str {
        const TEXT: [&str; 25] = [
            "success",
            "unknown error",
            "out of memory",
            "can't find the driver",
            "can't find the target",
            "can't find the logical unit",
            "can't find the session",
            "can't find the connection",
            "can't find the binding",
            "this target already exists",
            "this logical unit number already exists",
            "this binding already exists",
            "this access control rule already exists",
            "this access control rule does not exist",
            "this account already exists",
            "can't find the account",
            "too many accounts",
            "invalid request",
            "this target already has an outgoing account",
            "this target is still active",
            "this logical unit is still active",
            "this driver is busy",
            "this operation isn't supported",
            "unknown parameter",
            "this device has Prevent Removal set",
        ];
        TEXT.get(self.0 as usize).copied().unwrap_or("unknown error code")
    }
}

/// What went wrong with one call.
#[derive(Debug, thiserror::Error)]
pub(crate) enum IpcError {
    /// Nothing listens on the socket (tgtd not started, or stopped).
    #[error("cannot reach tgtd at {path}: {source}")]
    Unreachable { path: PathBuf, source: std::io::Error },
    /// tgtd did not answer within the deadline.
    #[error("tgtd did not answer within {0:?}")]
    Timeout(Duration),
    /// tgtd answered with an error code.
    #[error("tgtd refused: {} (code {})", .0.message(), .0.0)]
    Refused(Refusal),
    /// The exchange broke off or the answer made no sense.
    #[error("talking to tgtd at {path}: {message}")]
    Protocol { path: PathBuf, message: String },
}

/// One management request: `struct tgtadm_req` and its parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Request {
    pub mode: Mode,
    pub op: Op,
    pub tid: i32,
    pub sid: u64,
    pub lun: u64,
    pub cid: u32,
    pub force: bool,
    params: String,
}

impl Request {
    /// A request for the iSCSI driver with tgtadm's defaults (no target: `-1`, no LUN:
    /// `UINT64_MAX`).
    pub(crate) fn new(mode: Mode, op: Op) -> Self {
        Request { mode, op, tid: -1, sid: 0, lun: u64::MAX, cid: 0, force: false, params: String::new() }
    }

    pub(crate) fn tid(mut self, tid: u32) -> Self {
        // tgtd's tids are positive `int`s; a larger one can only be refused.
        self.tid = i32::try_from(tid).unwrap_or(i32::MAX);
        self
    }

    pub(crate) fn lun(mut self, lun: u32) -> Self {
        self.lun = u64::from(lun);
        self
    }

    pub(crate) fn connection(mut self, sid: u64, cid: u32) -> Self {
        (self.sid, self.cid) = (sid, cid);
        self
    }

    pub(crate) fn force(mut self) -> Self {
        self.force = true;
        self
    }

    /// Appends `key=value`, `,`-separated as tgtadm joins them.
    pub(crate) fn param(mut self, key: &str, value: &str) -> Self {
        self.push(&format!("{key}={value}"));
        self
    }

    /// Appends a raw item (tgtadm's `targetOps <ops>,` for `--params`).
    pub(crate) fn raw(mut self, item: &str) -> Self {
        self.push(item);
        self
    }

    fn push(&mut self, item: &str) {
        if !self.params.is_empty() {
            self.params.push(',');
        }
        self.params.push_str(item);
    }

    /// The bytes tgtadm would send.
    pub(crate) fn encode(&self) -> Vec<u8> {
        let params_len = if self.params.is_empty() { 0 } else { self.params.len() + 1 };
        let mut out = Vec::with_capacity(REQ_LEN + params_len);
        out.extend_from_slice(&(self.mode as u32).to_ne_bytes());
        out.extend_from_slice(&(self.op as u32).to_ne_bytes());
        let mut lld = [0u8; LLD_LEN];
        lld[..5].copy_from_slice(b"iscsi");
        out.extend_from_slice(&lld);
        let len = u32::try_from(REQ_LEN + params_len).unwrap_or(u32::MAX);
        out.extend_from_slice(&len.to_ne_bytes());
        out.extend_from_slice(&self.tid.to_ne_bytes());
        out.extend_from_slice(&self.sid.to_ne_bytes());
        out.extend_from_slice(&self.lun.to_ne_bytes());
        out.extend_from_slice(&self.cid.to_ne_bytes());
        // host_no, device_type (TYPE_DISK), ac_dir (incoming), pack.
        for field in [0u32; 4] {
            out.extend_from_slice(&field.to_ne_bytes());
        }
        out.extend_from_slice(&u32::from(self.force).to_ne_bytes());
        out.resize(REQ_LEN, 0);
        if params_len > 0 {
            out.extend_from_slice(self.params.as_bytes());
            out.push(0);
        }
        out
    }

    /// Checks what tgtd would drop without an answer: a NUL inside a parameter (it would
    /// cut the text short) or parameters past its limit.
    fn check(&self) -> Result<(), String> {
        if self.params.contains('\0') {
            return Err("a parameter holds a NUL byte".to_owned());
        }
        if self.params.len() + 1 > MAX_PARAMS {
            return Err(format!("parameters of {} bytes exceed tgtd's {MAX_PARAMS}", self.params.len()));
        }
        Ok(())
    }
}

/// The control socket of the tgtd on `control_port`, where tgtadm looks for it.
pub(crate) fn socket_path(control_port: u16) -> PathBuf {
    let base = std::env::var_os("TGT_IPC_SOCKET").unwrap_or_else(|| "/var/run/tgtd/socket".into());
    let mut path = base;
    path.push(format!(".{control_port}"));
    PathBuf::from(path)
}

/// Sends one request to the socket at `path` and returns tgtd's text answer (empty for
/// the operations that print nothing), within `timeout`.
pub(crate) async fn call(
    path: &std::path::Path,
    request: &Request,
    timeout: Duration,
) -> Result<String, IpcError> {
    let protocol = |message: String| IpcError::Protocol { path: path.to_owned(), message };
    request.check().map_err(protocol)?;
    match tokio::time::timeout(timeout, exchange(path, request)).await {
        Ok(answer) => answer,
        Err(_) => Err(IpcError::Timeout(timeout)),
    }
}

async fn exchange(path: &std::path::Path, request: &Request) -> Result<String, IpcError> {
    let protocol = |message: String| IpcError::Protocol { path: path.to_owned(), message };
    let mut stream = UnixStream::connect(path)
        .await
        .map_err(|source| IpcError::Unreachable { path: path.to_owned(), source })?;
    stream.write_all(&request.encode()).await.map_err(|e| protocol(format!("sending the request: {e}")))?;
    let mut head = [0u8; RSP_LEN];
    stream.read_exact(&mut head).await.map_err(|e| protocol(format!("reading the answer's header: {e}")))?;
    let err = u32::from_ne_bytes([head[0], head[1], head[2], head[3]]);
    let len = u32::from_ne_bytes([head[4], head[5], head[6], head[7]]) as usize;
    if err != 0 {
        return Err(IpcError::Refused(Refusal(err)));
    }
    let body =
        len.checked_sub(RSP_LEN).ok_or_else(|| protocol(format!("answer length {len} below its header")))?;
    if body > MAX_ANSWER {
        return Err(protocol(format!("answer of {body} bytes is too long")));
    }
    let mut text = vec![0u8; body];
    stream
        .read_exact(&mut text)
        .await
        .map_err(|e| protocol(format!("reading {body} bytes of answer: {e}")))?;
    if let Some(end) = text.iter().position(|&b| b == 0) {
        text.truncate(end);
    }
    Ok(String::from_utf8_lossy(&text).into_owned())
}

#[cfg(test)]
mod tests {
    use tokio::net::UnixListener;

    use super::*;

    /// A peer on a temporary socket that reads one request and sends `answer` (or nothing,
    /// holding the connection open, when `answer` is `None`); returns what it read.
    fn peer(answer: Option<Vec<u8>>) -> (tempfile::TempDir, PathBuf, tokio::task::JoinHandle<Vec<u8>>) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("socket.1");
        let listener = UnixListener::bind(&path).unwrap();
        let task = tokio::spawn(async move {
            let (mut stream, _) = listener.accept().await.unwrap();
            let mut head = vec![0u8; REQ_LEN];
            stream.read_exact(&mut head).await.unwrap();
            let len = u32::from_ne_bytes(head[72..76].try_into().unwrap()) as usize;
            let mut params = vec![0u8; len - REQ_LEN];
            stream.read_exact(&mut params).await.unwrap();
            head.extend(params);
            match answer {
                Some(bytes) => stream.write_all(&bytes).await.unwrap(),
                None => tokio::time::sleep(Duration::from_secs(30)).await,
            }
            head
        });
        (dir, path, task)
    }

    fn answer(err: u32, text: &str) -> Vec<u8> {
        let body = if text.is_empty() { 0 } else { text.len() + 1 };
        let mut out = err.to_ne_bytes().to_vec();
        out.extend_from_slice(&u32::try_from(RSP_LEN + body).unwrap().to_ne_bytes());
        if body > 0 {
            out.extend_from_slice(text.as_bytes());
            out.push(0);
        }
        out
    }

    fn field(bytes: &[u8], at: usize) -> u32 {
        u32::from_ne_bytes(bytes[at..at + 4].try_into().unwrap())
    }

    #[test]
    fn a_request_is_laid_out_as_struct_tgtadm_req() {
        let bytes = Request::new(Mode::Device, Op::New)
            .tid(7)
            .lun(1)
            .param("path", "/v/volume-a")
            .param("bstype", "rdwr")
            .encode();
        assert_eq!(bytes.len(), REQ_LEN + "path=/v/volume-a,bstype=rdwr".len() + 1);
        assert_eq!((field(&bytes, 0), field(&bytes, 4)), (2, 0), "mode, op");
        assert_eq!(&bytes[8..14], b"iscsi\0");
        assert!(bytes[14..72].iter().all(|&b| b == 0));
        assert_eq!(field(&bytes, 72) as usize, bytes.len(), "len counts the header and the text");
        assert_eq!(field(&bytes, 76), 7, "tid");
        assert_eq!(u64::from_ne_bytes(bytes[80..88].try_into().unwrap()), 0, "sid");
        assert_eq!(u64::from_ne_bytes(bytes[88..96].try_into().unwrap()), 1, "lun");
        assert!(bytes[96..REQ_LEN].iter().all(|&b| b == 0), "cid, host_no, type, ac_dir, pack, force");
        assert_eq!(&bytes[REQ_LEN..], b"path=/v/volume-a,bstype=rdwr\0");

        let bytes = Request::new(Mode::Target, Op::Show).encode();
        assert_eq!(bytes.len(), REQ_LEN, "no parameters, no NUL");
        assert_eq!(field(&bytes, 76), u32::MAX, "no tid is -1");
        assert_eq!(u64::from_ne_bytes(bytes[88..96].try_into().unwrap()), u64::MAX, "no lun");
        let bytes = Request::new(Mode::Connection, Op::Delete).tid(3).connection(9, 2).force().encode();
        assert_eq!(u64::from_ne_bytes(bytes[80..88].try_into().unwrap()), 9);
        assert_eq!((field(&bytes, 96), field(&bytes, 116)), (2, 1), "cid, force");
        let bytes =
            Request::new(Mode::Device, Op::Update).tid(1).lun(1).raw("targetOps readonly=1,").encode();
        assert_eq!(&bytes[REQ_LEN..], b"targetOps readonly=1,\0");
    }

    #[tokio::test]
    async fn an_answer_is_read_to_its_text_and_a_refusal_is_its_code() {
        let (_dir, path, peer_task) = peer(Some(answer(0, "Target 1: iqn.x\n")));
        let request = Request::new(Mode::Target, Op::New).tid(1).param("targetname", "iqn.x");
        let text = call(&path, &request, Duration::from_secs(5)).await.unwrap();
        assert_eq!(text, "Target 1: iqn.x\n");
        assert_eq!(peer_task.await.unwrap(), request.encode(), "the peer got the request whole");

        let (_dir, path, _peer) = peer(Some(answer(0, "")));
        assert_eq!(call(&path, &request, Duration::from_secs(5)).await.unwrap(), "");

        let (_dir, path, _peer) = peer(Some(answer(9, "")));
        let err = call(&path, &request, Duration::from_secs(5)).await.unwrap_err();
        assert!(matches!(err, IpcError::Refused(Refusal::TARGET_EXIST)), "{err:?}");
        assert!(err.to_string().contains("this target already exists"), "{err}");
        assert_eq!(Refusal(99).message(), "unknown error code");
    }

    #[tokio::test]
    async fn a_silent_daemon_times_out_and_a_missing_one_is_unreachable() {
        let (_dir, path, _peer) = peer(None);
        let request = Request::new(Mode::Target, Op::Show);
        let started = std::time::Instant::now();
        let err = call(&path, &request, Duration::from_millis(200)).await.unwrap_err();
        assert!(matches!(err, IpcError::Timeout(_)), "{err:?}");
        assert!(started.elapsed() < Duration::from_secs(5));

        let dir = tempfile::tempdir().unwrap();
        let err = call(&dir.path().join("socket.2"), &request, Duration::from_secs(5)).await.unwrap_err();
        assert!(matches!(err, IpcError::Unreachable { .. }), "{err:?}");
    }

    #[tokio::test]
    async fn broken_answers_and_bad_parameters_are_errors() {
        // The connection closed half-way through the header.
        let (_dir, path, _peer) = peer(Some(vec![0, 0]));
        let request = Request::new(Mode::Target, Op::Show);
        let err = call(&path, &request, Duration::from_secs(5)).await.unwrap_err();
        assert!(matches!(err, IpcError::Protocol { .. }), "{err:?}");
        // A length shorter than the header itself.
        let mut short = 0u32.to_ne_bytes().to_vec();
        short.extend_from_slice(&4u32.to_ne_bytes());
        let (_dir, path, _peer) = peer(Some(short));
        let err = call(&path, &request, Duration::from_secs(5)).await.unwrap_err();
        assert!(err.to_string().contains("below its header"), "{err}");
        // Nothing is sent that tgtd would misread or drop.
        let dir = tempfile::tempdir().unwrap();
        let nul = Request::new(Mode::Account, Op::Delete).param("user", "a\0b");
        let err = call(&dir.path().join("s.1"), &nul, Duration::from_secs(5)).await.unwrap_err();
        assert!(err.to_string().contains("NUL"), "{err}");
        let long = Request::new(Mode::Account, Op::Delete).param("user", &"u".repeat(MAX_PARAMS));
        let err = call(&dir.path().join("s.1"), &long, Duration::from_secs(5)).await.unwrap_err();
        assert!(err.to_string().contains("exceed"), "{err}");
    }

    #[test]
    fn the_socket_is_where_tgtadm_looks() {
        if std::env::var_os("TGT_IPC_SOCKET").is_none() {
            assert_eq!(socket_path(3260), PathBuf::from("/var/run/tgtd/socket.3260"));
        }
    }
}
