//! One NBD connection in the transmission phase, with many requests in flight.
//!
//! Callers register an operation (its cookies, and for a read the caller's buffer) in a
//! shared table and hand it to a writer task, which alone writes to the socket; a reader
//! task alone reads it and fills the operation's buffer straight from the socket, chunk by
//! chunk, so replies may come in any order and a read larger than the server's maximum is
//! several requests in flight into one buffer. A caller that gives up (its future dropped)
//! never leaves half a request on the wire, as only the writer writes. The connection is
//! closed with `NBD_CMD_DISC` when the last clone of the client is dropped or `close` is
//! called. Any reply that breaks the protocol fails every operation in flight and the
//! connection, with a message that says what the server sent; nothing a server sends can
//! make the client panic or allocate more than the caller's buffers and 16 MiB.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader, BufWriter};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use super::proto::*;
use super::{NbdAddress, NbdOptions, handshake};
use crate::backup::Extent;
use crate::error::{DriverError, Result};

/// The read half of a connection.
pub(super) type ReadHalf = Box<dyn AsyncRead + Send + Unpin>;
/// The write half of a connection.
pub(super) type WriteHalf = Box<dyn AsyncWrite + Send + Unpin>;

/// The largest payload of a reply chunk that is not read data (block status, errors).
const MAX_CHUNK_PAYLOAD: u32 = 16 << 20;
/// The longest range one block status request asks about.
const BLOCK_STATUS_SPAN: u64 = 1 << 31;
/// The longest range one write-zeroes or trim request covers.
const ZERO_SPAN: u64 = 1 << 30;
/// The buffer of zeros written where the server cannot write zeroes itself.
const ZERO_BUFFER: u64 = 1 << 20;
/// How long the reader may wait for the server to close after `NBD_CMD_DISC`.
const DISCONNECT_GRACE: Duration = Duration::from_secs(5);

/// A client of one NBD export over one connection. Clones share the connection.
#[derive(Clone)]
pub struct NbdClient {
    handle: Arc<Handle>,
}

impl std::fmt::Debug for NbdClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NbdClient")
            .field("server", &self.handle.server)
            .field("export", &self.handle.info)
            .finish()
    }
}

/// What the callers hold; dropping the last one closes the writer's channel.
struct Handle {
    info: ExportInfo,
    server: String,
    shared: Arc<Shared>,
    tx: mpsc::UnboundedSender<Command>,
    max_request: u64,
}

/// What the callers and both tasks share.
struct Shared {
    server: String,
    allocation_context: Option<u32>,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// Why the connection is unusable, once it is.
    dead: Option<String>,
    next_cookie: u64,
    next_op: u64,
    pieces: HashMap<u64, Piece>,
    ops: HashMap<u64, Op>,
}

/// One request on the wire.
#[derive(Debug, Clone, Copy)]
struct Piece {
    op: u64,
    command: u16,
    offset: u64,
    length: u32,
    /// Bytes of a read this request's reply chunks covered so far.
    covered: u64,
}

/// What a caller waits for: one or several pieces.
struct Op {
    command: u16,
    base: u64,
    /// A read's destination (taken by the reader while it fills it) or a write's source
    /// once the writer gives it back.
    buf: Option<Vec<u8>>,
    /// Block status descriptors (length, flags) in order.
    statuses: Vec<(u32, u32)>,
    /// Pieces not yet answered, plus one while the writer holds a write's buffer.
    remaining: usize,
    error: Option<DriverError>,
    reply: oneshot::Sender<Result<Done>>,
}

/// A finished operation.
struct Done {
    buf: Option<Vec<u8>>,
    statuses: Vec<(u32, u32)>,
}

/// What the writer task is asked to do.
enum Command {
    Send { op: u64, requests: Vec<Request>, payload: Option<Vec<u8>> },
    Close(oneshot::Sender<()>),
}

/// One request header, and where its payload starts in the operation's buffer.
struct Request {
    flags: u16,
    command: u16,
    cookie: u64,
    offset: u64,
    length: u32,
    payload_at: usize,
}

impl NbdClient {
    /// Connects to `export` at `address` (TCP or Unix socket) and negotiates it.
    pub async fn connect(address: &NbdAddress, export: &str, options: &NbdOptions) -> Result<Self> {
        if export.len() > 4096 {
            return Err(DriverError::InvalidInput("an NBD export name is at most 4096 bytes".to_owned()));
        }
        let server = address.to_string();
        let fail = |e: std::io::Error| {
            DriverError::Backend(format!("cannot connect to the NBD server {server}: {e}"))
        };
        let work = async {
            match address {
                NbdAddress::Tcp { host, port } => {
                    let mut stream =
                        tokio::net::TcpStream::connect((host.as_str(), *port)).await.map_err(fail)?;
                    stream.set_nodelay(true).map_err(fail)?;
                    let info = handshake::negotiate(&mut stream, export, &server).await?;
                    let (r, w) = stream.into_split();
                    Ok::<_, DriverError>((info, Box::new(r) as ReadHalf, Box::new(w) as WriteHalf))
                }
                NbdAddress::Unix(path) => {
                    let mut stream = tokio::net::UnixStream::connect(path).await.map_err(fail)?;
                    let info = handshake::negotiate(&mut stream, export, &server).await?;
                    let (r, w) = stream.into_split();
                    Ok((info, Box::new(r) as ReadHalf, Box::new(w) as WriteHalf))
                }
            }
        };
        let (info, r, w) = tokio::time::timeout(options.handshake_timeout, work).await.map_err(|_| {
            DriverError::Backend(format!(
                "the NBD server {server} did not finish the handshake within {:?}",
                options.handshake_timeout
            ))
        })??;
        Ok(Self::start(info, server, r, w, options))
    }

    /// Negotiates `export` over any byte stream (a test's in-memory pipe, a proxied socket).
    pub async fn over<S>(stream: S, export: &str, server: &str, options: &NbdOptions) -> Result<Self>
    where
        S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
    {
        let mut stream = stream;
        let info = tokio::time::timeout(
            options.handshake_timeout,
            handshake::negotiate(&mut stream, export, server),
        )
        .await
        .map_err(|_| {
            DriverError::Backend(format!("the NBD server {server} did not finish the handshake"))
        })??;
        let (r, w) = tokio::io::split(stream);
        Ok(Self::start(info, server.to_owned(), Box::new(r), Box::new(w), options))
    }

    fn start(info: ExportInfo, server: String, r: ReadHalf, w: WriteHalf, options: &NbdOptions) -> Self {
        let shared = Arc::new(Shared {
            server: server.clone(),
            allocation_context: info.allocation_context,
            state: Mutex::new(State::default()),
        });
        let (tx, rx) = mpsc::unbounded_channel();
        let reader = tokio::spawn(read_replies(BufReader::with_capacity(256 << 10, r), shared.clone()));
        tokio::spawn(write_requests(BufWriter::with_capacity(256 << 10, w), rx, shared.clone(), reader));
        // Pieces are multiples of the minimum block size and at most the maximum one.
        let max = u64::from(info.max_block.min(options.max_request.max(info.min_block)));
        let max_request = (max / u64::from(info.min_block) * u64::from(info.min_block)).max(1);
        Self { handle: Arc::new(Handle { info, server, shared, tx, max_request }) }
    }

    /// What the handshake learnt about the export.
    pub fn info(&self) -> &ExportInfo {
        &self.handle.info
    }

    /// The export's size in bytes.
    pub fn size(&self) -> u64 {
        self.handle.info.size
    }

    /// The server, as error messages name it.
    pub fn server(&self) -> &str {
        &self.handle.server
    }

    /// Fills all of `buf` from `offset` (holes read as zeros) and hands it back.
    pub async fn read(&self, offset: u64, buf: Vec<u8>) -> Result<Vec<u8>> {
        let length = buf.len() as u64;
        self.check_range("read", offset, length)?;
        if length == 0 {
            return Ok(buf);
        }
        let done =
            self.submit(CMD_READ, 0, offset, length, self.handle.max_request, Some(buf), false).await?;
        Ok(done.buf.unwrap_or_default())
    }

    /// Writes all of `buf` at `offset` and hands it back.
    pub async fn write(&self, offset: u64, buf: Vec<u8>) -> Result<Vec<u8>> {
        let length = buf.len() as u64;
        self.check_writable("writes")?;
        self.check_range("write", offset, length)?;
        if length == 0 {
            return Ok(buf);
        }
        let done =
            self.submit(CMD_WRITE, 0, offset, length, self.handle.max_request, Some(buf), true).await?;
        Ok(done.buf.unwrap_or_default())
    }

    /// Makes `[offset, offset + length)` read as zeros. With `punch` the server may
    /// deallocate the range (no `NBD_CMD_FLAG_NO_HOLE`); with `fast` it must do it without
    /// writing (`NBD_CMD_FLAG_FAST_ZERO`) or fail with `NotSupported`. A server without
    /// write-zeroes gets zeros written from a small buffer (unless `fast`).
    pub async fn write_zeroes(&self, offset: u64, length: u64, punch: bool, fast: bool) -> Result<()> {
        self.check_writable("write-zeroes")?;
        self.check_range("write-zeroes", offset, length)?;
        if length == 0 {
            return Ok(());
        }
        let flags = self.handle.info.flags;
        if fast && !flags.can_fast_zero() {
            return Err(DriverError::NotSupported(format!("{}: fast zeroing", self.describe())));
        }
        if !flags.can_write_zeroes() {
            return self.write_zero_buffers(offset, length).await;
        }
        let mut command_flags = if punch { 0 } else { CMD_FLAG_NO_HOLE };
        if fast {
            command_flags |= CMD_FLAG_FAST_ZERO;
        }
        self.submit(CMD_WRITE_ZEROES, command_flags, offset, length, self.span(ZERO_SPAN), None, false)
            .await?;
        Ok(())
    }

    async fn write_zero_buffers(&self, offset: u64, length: u64) -> Result<()> {
        let step = ZERO_BUFFER.min(self.handle.max_request);
        let mut buf = vec![0u8; step.min(length) as usize];
        let mut at = offset;
        while at < offset + length {
            let n = step.min(offset + length - at) as usize;
            buf.truncate(n);
            buf = self.write(at, buf).await?;
            at += n as u64;
        }
        Ok(())
    }

    /// Tells the server `[offset, offset + length)` is no longer needed (a no-op on a
    /// server without trim; the range's content is undefined afterwards).
    pub async fn trim(&self, offset: u64, length: u64) -> Result<()> {
        self.check_writable("trim")?;
        self.check_range("trim", offset, length)?;
        if length == 0 || !self.handle.info.flags.can_trim() {
            return Ok(());
        }
        self.submit(CMD_TRIM, 0, offset, length, self.span(ZERO_SPAN), None, false).await?;
        Ok(())
    }

    /// Makes every completed write durable (nothing to do on a server without flush).
    pub async fn flush(&self) -> Result<()> {
        if !self.handle.info.flags.can_flush() {
            return Ok(());
        }
        self.submit(CMD_FLUSH, 0, 0, 0, 1, None, false).await?;
        Ok(())
    }

    /// The allocation map of `[offset, offset + length)` from `base:allocation`: extents
    /// in order covering the range exactly, adjacent ones of the same kind merged. A range
    /// reads as zeros (`data: false`) where the server sets `NBD_STATE_ZERO`; a hole without
    /// it may hold data (a backing file's), so it counts as data. Without the meta context
    /// the whole range is one data extent.
    pub async fn block_status(&self, offset: u64, length: u64) -> Result<Vec<Extent>> {
        self.check_range("block-status", offset, length)?;
        let mut extents: Vec<Extent> = Vec::new();
        if length == 0 {
            return Ok(extents);
        }
        if self.handle.info.allocation_context.is_none() {
            return Ok(vec![Extent { offset, length, data: true }]);
        }
        let end = offset + length;
        let mut at = offset;
        while at < end {
            let span = self.span(BLOCK_STATUS_SPAN).min(end - at);
            let done = self.submit(CMD_BLOCK_STATUS, 0, at, span, span, None, false).await?;
            let before = at;
            for (len, flags) in done.statuses {
                if at >= before + span {
                    break;
                }
                let len = u64::from(len).min(before + span - at);
                push_extent(&mut extents, Extent { offset: at, length: len, data: flags & STATE_ZERO == 0 });
                at += len;
            }
            if at == before {
                return Err(DriverError::Backend(format!(
                    "{}: block status at {at} answered no extent",
                    self.describe()
                )));
            }
        }
        Ok(extents)
    }

    /// Sends `NBD_CMD_DISC` after the requests in flight and waits until it is written.
    pub async fn close(self) -> Result<()> {
        let (tx, rx) = oneshot::channel();
        if self.handle.tx.send(Command::Close(tx)).is_ok() {
            let _ = rx.await;
        }
        Ok(())
    }

    fn describe(&self) -> String {
        format!("NBD export {:?} on {}", self.handle.info.name, self.handle.server)
    }

    /// The longest span of a request without payload, a multiple of the minimum block size.
    fn span(&self, limit: u64) -> u64 {
        let min = u64::from(self.handle.info.min_block);
        (limit / min * min).max(min)
    }

    fn check_writable(&self, what: &str) -> Result<()> {
        if self.handle.info.flags.read_only() {
            return Err(DriverError::NotSupported(format!(
                "{} is read-only: it refuses {what}",
                self.describe()
            )));
        }
        Ok(())
    }

    fn check_range(&self, what: &str, offset: u64, length: u64) -> Result<()> {
        let size = self.handle.info.size;
        if offset.checked_add(length).is_none_or(|end| end > size) {
            return Err(DriverError::InvalidInput(format!(
                "{what} of {length} bytes at {offset} is beyond the end of {} ({size} bytes)",
                self.describe()
            )));
        }
        Ok(())
    }

    /// Registers an operation of `[offset, offset + length)` split into requests of at most
    /// `piece` bytes, hands it to the writer and waits for its replies.
    #[allow(clippy::too_many_arguments)]
    async fn submit(
        &self,
        command: u16,
        flags: u16,
        offset: u64,
        length: u64,
        piece: u64,
        buf: Option<Vec<u8>>,
        payload: bool,
    ) -> Result<Done> {
        let (reply, rx) = oneshot::channel();
        let (payload, buf) = if payload { (buf, None) } else { (None, buf) };
        {
            let mut state = self.handle.shared.state.lock();
            if let Some(why) = &state.dead {
                return Err(self.handle.shared.dead_error(why));
            }
            let op = state.next_op;
            state.next_op += 1;
            let mut requests = Vec::new();
            let mut at = offset;
            loop {
                let len = piece.min(offset + length - at);
                let cookie = state.next_cookie;
                state.next_cookie += 1;
                let piece_len = len as u32;
                state.pieces.insert(cookie, Piece { op, command, offset: at, length: piece_len, covered: 0 });
                let payload_at = (at - offset) as usize;
                requests.push(Request { flags, command, cookie, offset: at, length: piece_len, payload_at });
                at += len;
                if at >= offset + length {
                    break;
                }
            }
            let remaining = requests.len() + usize::from(payload.is_some());
            let record =
                Op { command, base: offset, buf, statuses: Vec::new(), remaining, error: None, reply };
            state.ops.insert(op, record);
            // Sent under the lock so a writer that dies now finds the operation to fail.
            if self.handle.tx.send(Command::Send { op, requests, payload }).is_err() {
                state.dead.get_or_insert_with(|| "the connection's writer stopped".to_owned());
                let why = state.dead.clone().unwrap_or_default();
                state.fail_all(&self.handle.shared, &why);
            }
        }
        match rx.await {
            Ok(result) => result,
            Err(_) => Err(self.handle.shared.dead_error("the connection's tasks stopped")),
        }
    }
}

fn push_extent(extents: &mut Vec<Extent>, next: Extent) {
    if next.length == 0 {
        return;
    }
    match extents.last_mut() {
        Some(last) if last.data == next.data && last.offset + last.length == next.offset => {
            last.length += next.length
        }
        _ => extents.push(next),
    }
}

impl Shared {
    fn dead_error(&self, why: &str) -> DriverError {
        DriverError::Backend(format!("the NBD connection to {} failed: {why}", self.server))
    }

    /// Marks the connection dead and fails everything in flight.
    fn fail(&self, why: &str) {
        let mut state = self.state.lock();
        state.dead.get_or_insert_with(|| why.to_owned());
        state.fail_all(self, why);
    }

    /// Gives a write's buffer back once the writer has sent it.
    fn written(&self, op: u64, buf: Vec<u8>) {
        let mut state = self.state.lock();
        if let Some(record) = state.ops.get_mut(&op) {
            record.buf = Some(buf);
            record.remaining -= 1;
            state.finish_if_done(op);
        }
    }
}

impl State {
    fn fail_all(&mut self, shared: &Shared, why: &str) {
        self.pieces.clear();
        for (_, op) in self.ops.drain() {
            let _ = op.reply.send(Err(shared.dead_error(why)));
        }
    }

    fn finish_if_done(&mut self, op: u64) {
        if self.ops.get(&op).is_some_and(|o| o.remaining == 0)
            && let Some(record) = self.ops.remove(&op)
        {
            let result = match record.error {
                Some(e) => Err(e),
                None => Ok(Done { buf: record.buf, statuses: record.statuses }),
            };
            let _ = record.reply.send(result);
        }
    }

    /// A piece's last reply: its operation is done when every piece is.
    fn piece_done(&mut self, shared: &Shared, cookie: u64) {
        let Some(piece) = self.pieces.remove(&cookie) else { return };
        let Some(op) = self.ops.get_mut(&piece.op) else { return };
        if op.command == CMD_READ && op.error.is_none() && piece.covered != u64::from(piece.length) {
            op.error = Some(shared.protocol_error(format!(
                "the reply to a read of {} bytes at {} covered {} bytes",
                piece.length, piece.offset, piece.covered
            )));
        }
        op.remaining -= 1;
        self.finish_if_done(piece.op);
    }

    fn set_error(&mut self, cookie: u64, error: DriverError) {
        if let Some(op) = self.pieces.get(&cookie).and_then(|p| self.ops.get_mut(&p.op)) {
            op.error.get_or_insert(error);
        }
    }
}

impl Shared {
    fn protocol_error(&self, what: String) -> DriverError {
        DriverError::Backend(format!("the NBD server {} broke the protocol: {what}", self.server))
    }

    fn piece(&self, cookie: u64) -> Result<Piece, String> {
        self.state
            .lock()
            .pieces
            .get(&cookie)
            .copied()
            .ok_or_else(|| format!("a reply with unknown cookie {cookie}"))
    }
}

/// The writer task: writes requests in order, batching them while more are queued.
async fn write_requests(
    mut w: BufWriter<WriteHalf>,
    mut rx: mpsc::UnboundedReceiver<Command>,
    shared: Arc<Shared>,
    reader: JoinHandle<()>,
) {
    let mut closed = None;
    while let Some(command) = rx.recv().await {
        let sent = match command {
            Command::Send { op, requests, payload } => send(&mut w, &shared, op, requests, payload).await,
            Command::Close(tx) => {
                closed = Some(tx);
                break;
            }
        };
        let sent = match sent {
            Ok(()) if rx.is_empty() => w.flush().await,
            other => other,
        };
        if let Err(e) = sent {
            shared.fail(&format!("cannot send to the server: {e}"));
            reader.abort();
            return;
        }
    }
    // Every handle is gone or `close` was called: disconnect after what was sent.
    let disc = request(0, CMD_DISC, u64::MAX, 0, 0);
    let _ = async {
        w.write_all(&disc).await?;
        w.flush().await?;
        w.shutdown().await
    }
    .await;
    if let Some(tx) = closed {
        let _ = tx.send(());
    }
    let abort = reader.abort_handle();
    if tokio::time::timeout(DISCONNECT_GRACE, reader).await.is_err() {
        abort.abort();
    }
    shared.fail("the client disconnected");
}

async fn send(
    w: &mut BufWriter<WriteHalf>,
    shared: &Shared,
    op: u64,
    requests: Vec<Request>,
    payload: Option<Vec<u8>>,
) -> std::io::Result<()> {
    for r in &requests {
        w.write_all(&request(r.flags, r.command, r.cookie, r.offset, r.length)).await?;
        if let Some(data) = &payload {
            let part = data.get(r.payload_at..r.payload_at + r.length as usize).unwrap_or_default();
            w.write_all(part).await?;
        }
    }
    if let Some(buf) = payload {
        shared.written(op, buf);
    }
    Ok(())
}

/// The reader task: dispatches replies until the connection ends or breaks the protocol.
async fn read_replies(mut r: BufReader<ReadHalf>, shared: Arc<Shared>) {
    let why = loop {
        match read_reply(&mut r, &shared).await {
            Ok(true) => continue,
            Ok(false) => break "the server closed the connection".to_owned(),
            Err(why) => break why,
        }
    };
    shared.fail(&why);
}

/// One reply or chunk; false on a clean end of stream.
async fn read_reply(r: &mut BufReader<ReadHalf>, shared: &Shared) -> Result<bool, String> {
    let magic = match r.read_u32().await {
        Ok(magic) => magic,
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(false),
        Err(e) => return Err(format!("cannot read from the server: {e}")),
    };
    match magic {
        SIMPLE_REPLY_MAGIC => {
            let errno = r.read_u32().await.map_err(io)?;
            let cookie = r.read_u64().await.map_err(io)?;
            simple_reply(r, shared, cookie, errno).await?;
        }
        STRUCTURED_REPLY_MAGIC => {
            let flags = r.read_u16().await.map_err(io)?;
            let kind = r.read_u16().await.map_err(io)?;
            let cookie = r.read_u64().await.map_err(io)?;
            let length = r.read_u32().await.map_err(io)?;
            chunk(r, shared, cookie, kind, length).await?;
            if flags & REPLY_FLAG_DONE != 0 {
                shared.state.lock().piece_done(shared, cookie);
            } else if kind == CHUNK_NONE {
                return Err("an NBD_REPLY_TYPE_NONE chunk without the DONE flag".to_owned());
            }
        }
        other => return Err(format!("a reply with bad magic {other:#010x}")),
    }
    Ok(true)
}

fn io(e: std::io::Error) -> String {
    if e.kind() == std::io::ErrorKind::UnexpectedEof {
        "the server closed the connection in the middle of a reply".to_owned()
    } else {
        format!("cannot read from the server: {e}")
    }
}

async fn simple_reply(
    r: &mut BufReader<ReadHalf>,
    shared: &Shared,
    cookie: u64,
    errno: u32,
) -> Result<(), String> {
    let piece = shared.piece(cookie)?;
    if errno != 0 {
        let e = server_error(&what(&piece), errno, "");
        let mut state = shared.state.lock();
        state.set_error(cookie, e);
        state.piece_done(shared, cookie);
        return Ok(());
    }
    if piece.command == CMD_READ {
        fill(r, shared, cookie, piece, piece.offset, u64::from(piece.length)).await?;
    }
    shared.state.lock().piece_done(shared, cookie);
    Ok(())
}

fn what(piece: &Piece) -> String {
    format!("{} of {} bytes at {}", command_name(piece.command), piece.length, piece.offset)
}

/// One structured reply chunk's payload.
async fn chunk(
    r: &mut BufReader<ReadHalf>,
    shared: &Shared,
    cookie: u64,
    kind: u16,
    length: u32,
) -> Result<(), String> {
    let piece = shared.piece(cookie)?;
    match kind {
        CHUNK_NONE if length == 0 => Ok(()),
        CHUNK_NONE => Err(format!("an NBD_REPLY_TYPE_NONE chunk of {length} bytes")),
        CHUNK_OFFSET_DATA if piece.command == CMD_READ && length > 8 => {
            let offset = r.read_u64().await.map_err(io)?;
            fill(r, shared, cookie, piece, offset, u64::from(length - 8)).await
        }
        CHUNK_OFFSET_HOLE if piece.command == CMD_READ && length == 12 => {
            let offset = r.read_u64().await.map_err(io)?;
            let hole = r.read_u32().await.map_err(io)?;
            zero_fill(shared, cookie, piece, offset, u64::from(hole))
        }
        CHUNK_BLOCK_STATUS
            if piece.command == CMD_BLOCK_STATUS
                && length >= 12
                && (length - 4).is_multiple_of(8)
                && length <= MAX_CHUNK_PAYLOAD =>
        {
            let payload = payload(r, length).await?;
            let mut c = Cursor::new(&payload, "a block status chunk");
            let context = c.u32()?;
            if Some(context) != shared.allocation_context {
                return Ok(());
            }
            let mut statuses = Vec::with_capacity(c.rest().len() / 8);
            while !c.rest().is_empty() {
                let (len, flags) = (c.u32()?, c.u32()?);
                if len == 0 {
                    return Err("a block status descriptor of length 0".to_owned());
                }
                statuses.push((len, flags));
            }
            let mut state = shared.state.lock();
            if let Some(op) = state.ops.get_mut(&piece.op) {
                op.statuses.extend(statuses);
            }
            Ok(())
        }
        CHUNK_ERROR | CHUNK_ERROR_OFFSET if (6..=MAX_CHUNK_PAYLOAD).contains(&length) => {
            let payload = payload(r, length).await?;
            let mut c = Cursor::new(&payload, "an error chunk");
            let errno = c.u32()?;
            let message_len = c.u16()?;
            let message = text(c.take(usize::from(message_len))?);
            let at = if kind == CHUNK_ERROR_OFFSET { format!(" (at {})", c.u64()?) } else { String::new() };
            let e = server_error(&format!("{}{at}", what(&piece)), errno, &message);
            shared.state.lock().set_error(cookie, e);
            Ok(())
        }
        kind if kind & CHUNK_ERROR_BIT != 0 && (4..=MAX_CHUNK_PAYLOAD).contains(&length) => {
            let payload = payload(r, length).await?;
            let errno = Cursor::new(&payload, "an error chunk").u32()?;
            let e = server_error(&format!("{} (error chunk type {kind:#x})", what(&piece)), errno, "");
            shared.state.lock().set_error(cookie, e);
            Ok(())
        }
        _ => Err(format!(
            "a reply chunk of type {kind:#06x} and {length} bytes to a {}",
            command_name(piece.command)
        )),
    }
}

async fn payload(r: &mut BufReader<ReadHalf>, length: u32) -> Result<Vec<u8>, String> {
    let mut payload = vec![0u8; length as usize];
    r.read_exact(&mut payload).await.map_err(io)?;
    Ok(payload)
}

/// Where `[offset, offset + length)` of a piece lies in its operation's buffer.
fn place(piece: &Piece, base: u64, offset: u64, length: u64) -> Result<std::ops::Range<usize>, String> {
    let piece_end = piece.offset + u64::from(piece.length);
    let end = offset.checked_add(length).ok_or("a chunk past the end of the disk")?;
    if offset < piece.offset || end > piece_end {
        return Err(format!(
            "a chunk of {length} bytes at {offset} outside the read of {} bytes at {}",
            piece.length, piece.offset
        ));
    }
    let start = (offset - base) as usize;
    Ok(start..start + length as usize)
}

/// Reads `length` bytes of data for `offset` straight into the operation's buffer.
async fn fill(
    r: &mut BufReader<ReadHalf>,
    shared: &Shared,
    cookie: u64,
    piece: Piece,
    offset: u64,
    length: u64,
) -> Result<(), String> {
    let taken = {
        let mut state = shared.state.lock();
        match state.ops.get_mut(&piece.op) {
            Some(op) => Some((place(&piece, op.base, offset, length)?, op.buf.take())),
            None => None,
        }
    };
    let Some((range, Some(mut buf))) = taken else {
        // The operation already failed: the data still has to leave the socket.
        let skipped = tokio::io::copy(&mut r.take(length), &mut tokio::io::sink()).await.map_err(io)?;
        return if skipped == length { Ok(()) } else { Err(io(std::io::ErrorKind::UnexpectedEof.into())) };
    };
    let result = match buf.get_mut(range) {
        Some(dst) => r.read_exact(dst).await.map(drop).map_err(io),
        None => Err("a chunk outside the caller's buffer".to_owned()),
    };
    let mut state = shared.state.lock();
    if let Some(op) = state.ops.get_mut(&piece.op) {
        op.buf = Some(buf);
    }
    if let Some(p) = state.pieces.get_mut(&cookie) {
        p.covered += length;
    }
    result
}

fn zero_fill(shared: &Shared, cookie: u64, piece: Piece, offset: u64, length: u64) -> Result<(), String> {
    let mut state = shared.state.lock();
    let Some(op) = state.ops.get_mut(&piece.op) else { return Ok(()) };
    let range = place(&piece, op.base, offset, length)?;
    if let Some(dst) = op.buf.as_mut().and_then(|b| b.get_mut(range)) {
        dst.fill(0);
    }
    if let Some(p) = state.pieces.get_mut(&cookie) {
        p.covered += length;
    }
    Ok(())
}
