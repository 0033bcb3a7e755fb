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

use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::io::{AsyncRead, AsyncWrite, BufReader, BufWriter};
use tokio::sync::{mpsc, oneshot};

use super::connection::{
    Command, Done, Op, Piece, ReadHalf, Request, Shared, State, WriteHalf, read_replies, write_requests,
};
use super::proto::*;
use super::{NbdAddress, NbdOptions, handshake};
use crate::backup::Extent;
use crate::error::{DriverError, Result};

/// The longest range one block status request asks about.
const BLOCK_STATUS_SPAN: u64 = 1 << 31;
/// The longest range one write-zeroes or trim request covers.
const ZERO_SPAN: u64 = 1 << 30;
/// The buffer of zeros written where the server cannot write zeroes itself.
const ZERO_BUFFER: u64 = 1 << 20;
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
    request_timeout: Duration,
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
        Self {
            handle: Arc::new(Handle {
                info,
                server,
                shared,
                tx,
                max_request,
                request_timeout: options.request_timeout,
            }),
        }
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
        match tokio::time::timeout(self.handle.request_timeout, rx).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(self.handle.shared.dead_error("the connection's tasks stopped")),
            Err(_) => {
                // A request cannot be withdrawn: the connection is given up, which fails
                // every other request in flight too.
                let why = format!("no reply within {:?}", self.handle.request_timeout);
                self.handle.shared.fail(&why);
                Err(self.handle.shared.dead_error(&why))
            }
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
