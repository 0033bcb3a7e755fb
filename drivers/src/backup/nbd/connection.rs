//! The connection under an [`NbdClient`](super::NbdClient): the table of operations in
//! flight, the writer task that alone writes requests, and the reader task that alone
//! reads replies, checks each against the request it answers and fills the caller's
//! buffer straight from the socket.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader, BufWriter};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use super::proto::*;
use crate::error::{DriverError, Result};

/// The read half of a connection.
pub(super) type ReadHalf = Box<dyn AsyncRead + Send + Unpin>;
/// The write half of a connection.
pub(super) type WriteHalf = Box<dyn AsyncWrite + Send + Unpin>;

/// The largest payload of a reply chunk that is not read data (block status, errors).
const MAX_CHUNK_PAYLOAD: u32 = 16 << 20;
/// How long the reader may wait for the server to close after `NBD_CMD_DISC`.
const DISCONNECT_GRACE: Duration = Duration::from_secs(5);

/// What the callers and both tasks share.
pub(super) struct Shared {
    pub(super) server: String,
    pub(super) allocation_context: Option<u32>,
    pub(super) state: Mutex<State>,
}

#[derive(Default)]
pub(super) struct State {
    /// Why the connection is unusable, once it is.
    pub(super) dead: Option<String>,
    pub(super) next_cookie: u64,
    pub(super) next_op: u64,
    pub(super) pieces: HashMap<u64, Piece>,
    pub(super) ops: HashMap<u64, Op>,
}

/// One request on the wire.
#[derive(Debug, Clone, Copy)]
pub(super) struct Piece {
    pub(super) op: u64,
    pub(super) command: u16,
    pub(super) offset: u64,
    pub(super) length: u32,
    /// Bytes of a read this request's reply chunks covered so far.
    pub(super) covered: u64,
}

/// What a caller waits for: one or several pieces.
pub(super) struct Op {
    pub(super) command: u16,
    pub(super) base: u64,
    /// A read's destination (taken by the reader while it fills it) or a write's source
    /// once the writer gives it back.
    pub(super) buf: Option<Vec<u8>>,
    /// Block status descriptors (length, flags) in order.
    pub(super) statuses: Vec<(u32, u32)>,
    /// Pieces not yet answered, plus one while the writer holds a write's buffer.
    pub(super) remaining: usize,
    pub(super) error: Option<DriverError>,
    pub(super) reply: oneshot::Sender<Result<Done>>,
}

/// A finished operation.
pub(super) struct Done {
    pub(super) buf: Option<Vec<u8>>,
    pub(super) statuses: Vec<(u32, u32)>,
}

/// What the writer task is asked to do.
pub(super) enum Command {
    Send { op: u64, requests: Vec<Request>, payload: Option<Vec<u8>> },
    Close(oneshot::Sender<()>),
}

/// One request header, and where its payload starts in the operation's buffer.
pub(super) struct Request {
    pub(super) flags: u16,
    pub(super) command: u16,
    pub(super) cookie: u64,
    pub(super) offset: u64,
    pub(super) length: u32,
    pub(super) payload_at: usize,
}
impl Shared {
    pub(super) fn dead_error(&self, why: &str) -> DriverError {
        DriverError::Backend(format!("the NBD connection to {} failed: {why}", self.server))
    }

    /// Marks the connection dead and fails everything in flight.
    pub(super) fn fail(&self, why: &str) {
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
    pub(super) fn fail_all(&mut self, shared: &Shared, why: &str) {
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
pub(super) async fn write_requests(
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
pub(super) async fn read_replies(mut r: BufReader<ReadHalf>, shared: Arc<Shared>) {
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
