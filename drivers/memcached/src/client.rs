//! A small asynchronous memcached client: the meta protocol over tokio TCP, pipelined, with a
//! bounded pool of connections.
//!
//! Every call sends a batch of commands in one write and reads one reply per command, so a
//! batch costs one round trip whatever its size. Writing and reading run concurrently, so a
//! large batch cannot deadlock with the server's output buffer. Nothing here blocks a thread.
//! Nothing the server says is trusted with memory: a reply line is read up to [`MAX_LINE`]
//! bytes, and a value up to the server's `item_size_max` (read at connect), so a corrupt or
//! hostile server cannot make the process allocate without bound.

use std::io::Write as _;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;

use crate::error::MemcachedError;

/// The longest reply line read (a meta status line, a line of `stats settings`).
const MAX_LINE: u64 = 8 * 1024;
/// The largest value read before the server's own limit is known: memcached's largest
/// `item_size_max` (`-I 1024m`).
const MAX_ITEM: usize = 1 << 30;

/// How `ms` stores.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    /// Store whatever is there.
    Set,
    /// Store only if absent (`add`).
    Add,
    /// Append to an existing item.
    Append,
    /// Store only if present (`replace`).
    Replace,
}

/// One meta command.
#[derive(Debug, Clone)]
pub(crate) enum Cmd {
    /// `mg`: fetch an item, its value and/or its CAS token.
    Get { key: String, value: bool, cas: bool },
    /// `ms`: store an item.
    Set {
        key: String,
        data: Vec<u8>,
        mode: Mode,
        cas: Option<u64>,
        ttl: u32,
    },
    /// `md`: delete an item, optionally only if its CAS token matches.
    Delete { key: String, cas: Option<u64> },
    /// `ma`: add or subtract; `vivify` creates a missing counter with that value (and then
    /// does not apply the delta: pass the same number as `delta` to get a plain increment).
    Arith {
        key: String,
        delta: u64,
        decr: bool,
        vivify: Option<u64>,
    },
}

impl Cmd {
    fn mg(key: String, value: bool, cas: bool) -> Cmd {
        Cmd::Get { key, value, cas }
    }

    fn ms(key: String, data: Vec<u8>, mode: Mode, cas: Option<u64>, ttl: u32) -> Cmd {
        Cmd::Set {
            key,
            data,
            mode,
            cas,
            ttl,
        }
    }

    fn ma(key: String, delta: u64, decr: bool, vivify: Option<u64>) -> Cmd {
        Cmd::Arith {
            key,
            delta,
            decr,
            vivify,
        }
    }

    pub(crate) fn get(key: String) -> Cmd {
        Cmd::mg(key, true, false)
    }

    pub(crate) fn gets(key: String) -> Cmd {
        Cmd::mg(key, true, true)
    }

    pub(crate) fn exists(key: String) -> Cmd {
        Cmd::mg(key, false, false)
    }

    pub(crate) fn set(key: String, data: Vec<u8>) -> Cmd {
        Cmd::ms(key, data, Mode::Set, None, 0)
    }

    /// Stores whatever is there, expiring after `ttl` (memcached's exptime: seconds, or an
    /// absolute Unix time when over 30 days; 0 never).
    pub(crate) fn set_ttl(key: String, data: Vec<u8>, ttl: u32) -> Cmd {
        Cmd::ms(key, data, Mode::Set, None, ttl)
    }

    pub(crate) fn add(key: String, data: Vec<u8>, ttl: u32) -> Cmd {
        Cmd::ms(key, data, Mode::Add, None, ttl)
    }

    pub(crate) fn cas(key: String, data: Vec<u8>, cas: u64, ttl: u32) -> Cmd {
        Cmd::ms(key, data, Mode::Set, Some(cas), ttl)
    }

    /// Stores only over an item that exists (`NS` otherwise).
    pub(crate) fn replace(key: String, data: Vec<u8>) -> Cmd {
        Cmd::ms(key, data, Mode::Replace, None, 0)
    }

    pub(crate) fn append(key: String, data: Vec<u8>) -> Cmd {
        Cmd::ms(key, data, Mode::Append, None, 0)
    }

    pub(crate) fn delete(key: String) -> Cmd {
        Cmd::Delete { key, cas: None }
    }

    pub(crate) fn delete_cas(key: String, cas: u64) -> Cmd {
        let cas = Some(cas);
        Cmd::Delete { key, cas }
    }

    /// Adds `delta`, creating the counter at `delta` if missing; replies the new value.
    pub(crate) fn incr(key: String, delta: u64) -> Cmd {
        Cmd::ma(key, delta, false, Some(delta))
    }

    /// Subtracts `delta` (memcached stops at zero); a missing counter stays missing.
    pub(crate) fn decr(key: String, delta: u64) -> Cmd {
        Cmd::ma(key, delta, true, None)
    }

    /// Adds (`decr` false) or subtracts `delta`; a missing counter is created holding
    /// `initial` (the delta is then not applied).
    pub(crate) fn arith(key: String, delta: u64, decr: bool, initial: u64) -> Cmd {
        Cmd::ma(key, delta, decr, Some(initial))
    }

    fn encode(&self, out: &mut Vec<u8>) {
        let flag = |on: bool, flag: &'static str| if on { flag } else { "" };
        // Writing into a Vec cannot fail.
        let _ = match self {
            Cmd::Get { key, value, cas } => {
                write!(
                    out,
                    "mg {key}{}{}\r\n",
                    flag(*value, " v"),
                    flag(*cas, " c")
                )
            }
            Cmd::Set {
                key,
                data,
                mode,
                cas,
                ttl,
            } => {
                let mode = match mode {
                    Mode::Set => "S",
                    Mode::Add => "E",
                    Mode::Append => "A",
                    Mode::Replace => "R",
                };
                let _ = write!(out, "ms {key} {} c M{mode} T{ttl}", data.len());
                let _ = cas.map(|cas| write!(out, " C{cas}"));
                out.extend_from_slice(b"\r\n");
                out.extend_from_slice(data);
                write!(out, "\r\n")
            }
            Cmd::Delete { key, cas: None } => write!(out, "md {key}\r\n"),
            Cmd::Delete { key, cas: Some(c) } => write!(out, "md {key} C{c}\r\n"),
            Cmd::Arith {
                key,
                delta,
                decr,
                vivify,
            } => {
                let _ = write!(out, "ma {key} v D{delta}{}", flag(*decr, " MD"));
                let _ = vivify.map(|initial| write!(out, " N0 J{initial}"));
                write!(out, "\r\n")
            }
        };
    }
}

/// How a command went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Status {
    /// `HD` or `VA`: done, found, stored.
    Ok,
    /// `EN` or `NF`: no such item.
    Miss,
    /// `NS`: not stored (an `add` found the item, an append found none).
    NotStored,
    /// `EX`: the CAS token did not match.
    Exists,
    /// `SERVER_ERROR`: refused, e.g. an item larger than the server's limit.
    Refused(String),
}

/// The reply to one command.
#[derive(Debug, Clone)]
pub(crate) struct Reply {
    pub(crate) status: Status,
    pub(crate) data: Option<Vec<u8>>,
    pub(crate) cas: Option<u64>,
}

impl Reply {
    pub(crate) fn ok(&self) -> bool {
        self.status == Status::Ok
    }

    /// The value of a hit.
    pub(crate) fn value(&self) -> Option<&[u8]> {
        match self.status {
            Status::Ok => self.data.as_deref(),
            _ => None,
        }
    }

    /// A decimal value (a counter), if present and well-formed.
    pub(crate) fn number(&self) -> Option<u64> {
        self.value()
            .and_then(|v| std::str::from_utf8(v).ok())
            .and_then(|s| s.trim().parse().ok())
    }

    /// A signed decimal value, if present and well-formed.
    pub(crate) fn number_i64(&self) -> Option<i64> {
        self.value()
            .and_then(|v| std::str::from_utf8(v).ok())
            .and_then(|s| s.trim().parse().ok())
    }

    /// Turns a refusal into an error, for commands that must not be refused.
    pub(crate) fn checked(&self, what: &str) -> Result<&Reply, MemcachedError> {
        match &self.status {
            Status::Refused(message) => Err(MemcachedError::Refused(format!("{what}: {message}"))),
            _ => Ok(self),
        }
    }
}

struct Conn {
    reader: BufReader<OwnedReadHalf>,
    writer: OwnedWriteHalf,
}

/// A round trip's failure and whether any byte of a reply had arrived (if none did, the
/// server never executed the batch on this connection and it is safe to send it again).
struct Failed {
    error: MemcachedError,
    answered: bool,
}

/// A pool of pipelined connections to one memcached server.
#[derive(Debug)]
pub(crate) struct Client {
    addr: String,
    timeout: Duration,
    idle: Mutex<Vec<ConnBox>>,
    permits: Semaphore,
    /// The largest value a reply may announce: the server's `item_size_max`.
    max_value: AtomicUsize,
}

/// `Conn` holds tokio halves that are not `Debug`; the pool only needs to count them.
struct ConnBox(Conn);

impl std::fmt::Debug for ConnBox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Conn")
    }
}

impl Client {
    pub(crate) fn new(addr: &str, pool_size: usize, timeout: Duration) -> Client {
        Client {
            addr: addr.to_owned(),
            timeout,
            idle: Mutex::new(Vec::new()),
            permits: Semaphore::new(pool_size),
            max_value: AtomicUsize::new(MAX_ITEM),
        }
    }

    /// Refuses, from now on, replies announcing a value larger than `max` bytes.
    pub(crate) fn limit_values(&self, max: usize) {
        self.max_value.store(max.min(MAX_ITEM), Ordering::Relaxed);
    }

    pub(crate) fn addr(&self) -> &str {
        &self.addr
    }

    fn idle(&self) -> std::sync::MutexGuard<'_, Vec<ConnBox>> {
        // The list holds only idle connections: nothing to repair after a panic.
        self.idle.lock().unwrap_or_else(|p| p.into_inner())
    }

    async fn open(&self) -> Result<Conn, MemcachedError> {
        let io = |source| MemcachedError::Io {
            addr: self.addr.clone(),
            source,
        };
        let stream = tokio::time::timeout(self.timeout, TcpStream::connect(&self.addr))
            .await
            .map_err(|_| MemcachedError::Timeout {
                addr: self.addr.clone(),
                timeout: self.timeout,
            })?
            .map_err(io)?;
        stream.set_nodelay(true).map_err(io)?;
        let (read, write) = stream.into_split();
        Ok(Conn {
            reader: BufReader::with_capacity(64 * 1024, read),
            writer: write,
        })
    }

    /// Sends `cmds` in one pipelined write and returns one reply per command, in order.
    pub(crate) async fn run(&self, cmds: &[Cmd]) -> Result<Vec<Reply>, MemcachedError> {
        if cmds.is_empty() {
            return Ok(Vec::new());
        }
        let mut buf = Vec::with_capacity(64 * cmds.len());
        for cmd in cmds {
            cmd.encode(&mut buf);
        }
        let max = self.max_value.load(Ordering::Relaxed);
        self.exchange(&buf, |reader, answered| {
            Box::pin(read_replies(reader, cmds.len(), max, answered))
        })
        .await
    }

    /// Sends one classic text command (`version`, `stats settings`) and returns its lines up
    /// to `END` (or the single line, for commands that answer one).
    pub(crate) async fn text(
        &self,
        line: &str,
        multi: bool,
    ) -> Result<Vec<String>, MemcachedError> {
        let buf = format!("{line}\r\n").into_bytes();
        self.exchange(&buf, |reader, answered| {
            Box::pin(read_text(reader, multi, answered))
        })
        .await
    }

    async fn exchange<T, F>(&self, buf: &[u8], read: F) -> Result<T, MemcachedError>
    where
        F: for<'a> Fn(
            &'a mut BufReader<OwnedReadHalf>,
            &'a mut bool,
        ) -> futures::future::BoxFuture<'a, Result<T, MemcachedError>>,
    {
        let _permit = self
            .permits
            .acquire()
            .await
            .map_err(|_| MemcachedError::Protocol("connection pool closed".into()))?;
        for attempt in 0..2 {
            let pooled = self.idle().pop();
            let reused = pooled.is_some();
            let mut conn = match pooled {
                Some(ConnBox(conn)) => conn,
                None => self.open().await?,
            };
            let mut answered = false;
            let result = {
                let Conn { reader, writer } = &mut conn;
                let write = async {
                    writer.write_all(buf).await?;
                    writer.flush().await
                };
                let write = async {
                    write.await.map_err(|source| MemcachedError::Io {
                        addr: self.addr.clone(),
                        source,
                    })
                };
                let exchange = async { tokio::try_join!(write, read(reader, &mut answered)) };
                tokio::time::timeout(self.timeout, exchange).await
            };
            let failed = match result {
                Ok(Ok(((), value))) => {
                    self.idle().push(ConnBox(conn));
                    return Ok(value);
                }
                Ok(Err(error)) => Failed { error, answered },
                Err(_) => Failed {
                    error: MemcachedError::Timeout {
                        addr: self.addr.clone(),
                        timeout: self.timeout,
                    },
                    answered: true,
                },
            };
            // The connection is dropped. An I/O error on a pooled connection usually means
            // the server went away (a restart): every idle connection is as dead as this one.
            if matches!(failed.error, MemcachedError::Io { .. }) {
                self.idle().clear();
                if reused && !failed.answered && attempt == 0 {
                    continue;
                }
            }
            return Err(failed.error);
        }
        Err(MemcachedError::Protocol("unreachable retry".into()))
    }
}

fn io_error(source: std::io::Error) -> MemcachedError {
    let addr = "memcached".into();
    MemcachedError::Io { addr, source }
}

async fn read_line(
    reader: &mut BufReader<OwnedReadHalf>,
    line: &mut Vec<u8>,
    answered: &mut bool,
) -> Result<(), MemcachedError> {
    line.clear();
    let n = (&mut *reader)
        .take(MAX_LINE)
        .read_until(b'\n', line)
        .await
        .map_err(io_error)?;
    if n == 0 {
        let closed = "the server closed the connection";
        return Err(io_error(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            closed,
        )));
    }
    *answered = true;
    if !line.ends_with(b"\r\n") {
        line.truncate(80);
        return Err(MemcachedError::Protocol(format!(
            "a reply line without CRLF within {MAX_LINE} bytes: {:?}",
            String::from_utf8_lossy(line)
        )));
    }
    line.truncate(line.len() - 2);
    Ok(())
}

async fn read_replies(
    reader: &mut BufReader<OwnedReadHalf>,
    count: usize,
    max: usize,
    answered: &mut bool,
) -> Result<Vec<Reply>, MemcachedError> {
    let mut replies = Vec::with_capacity(count);
    let mut line = Vec::with_capacity(128);
    while replies.len() < count {
        read_line(reader, &mut line, answered).await?;
        let text = String::from_utf8_lossy(&line).into_owned();
        let mut words = text.split(' ');
        let code = words.next().unwrap_or_default();
        let mut reply = Reply {
            status: Status::Ok,
            data: None,
            cas: None,
        };
        match code {
            "VA" => {
                let size: usize = words
                    .next()
                    .and_then(|s| s.parse().ok())
                    .ok_or_else(|| MemcachedError::Protocol(format!("bad VA line: {text}")))?;
                if size > max {
                    return Err(MemcachedError::Protocol(format!(
                        "the server announced a value of {size} bytes, more than its item size limit ({max})"
                    )));
                }
                let mut data = vec![0u8; size + 2];
                reader.read_exact(&mut data).await.map_err(io_error)?;
                if !data.ends_with(b"\r\n") {
                    return Err(MemcachedError::Protocol("a value without CRLF".into()));
                }
                data.truncate(size);
                reply.data = Some(data);
            }
            "HD" => {}
            "EN" | "NF" => reply.status = Status::Miss,
            "NS" => reply.status = Status::NotStored,
            "EX" => reply.status = Status::Exists,
            "SERVER_ERROR" => {
                reply.status = Status::Refused(text["SERVER_ERROR".len()..].trim().to_owned())
            }
            // A client error means we and the server disagree about the protocol: the rest
            // of the stream cannot be trusted, so the connection is dropped by the caller.
            _ => return Err(MemcachedError::Refused(text)),
        }
        for flag in words {
            if let Some(cas) = flag.strip_prefix('c') {
                reply.cas = cas.parse().ok();
            }
        }
        replies.push(reply);
    }
    Ok(replies)
}

async fn read_text(
    reader: &mut BufReader<OwnedReadHalf>,
    multi: bool,
    answered: &mut bool,
) -> Result<Vec<String>, MemcachedError> {
    let mut lines = Vec::new();
    let mut line = Vec::new();
    loop {
        read_line(reader, &mut line, answered).await?;
        let text = String::from_utf8_lossy(&line).into_owned();
        if text == "ERROR" || text.starts_with("CLIENT_ERROR") || text.starts_with("SERVER_ERROR") {
            return Err(MemcachedError::Refused(text));
        }
        if !multi {
            lines.push(text);
            return Ok(lines);
        }
        if text == "END" {
            return Ok(lines);
        }
        if lines.len() == 1024 {
            return Err(MemcachedError::Protocol(
                "a text reply of over 1024 lines".into(),
            ));
        }
        lines.push(text);
    }
}
