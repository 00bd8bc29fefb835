//! The plugin's side of the agent API: HTTP/1.1 over the agent's unix socket.
//!
//! The client is hand-written on purpose. The plugin is a fresh process on every pod start.
//! reqwest (with hyper and a tokio runtime under it) cost about 0.25 ms per ADD more than a
//! bare connect, and together with rtnetlink it made the binary 5.0 MB instead of 1.1 MB:
//! dropping them took 0.33–0.47 ms off the median ADD on the benchmark VM
//! (docs/benchmarks.md). The API it needs is three fixed requests (register, unregister,
//! readiness) to a local socket. So this sends one
//! request per connection with `Connection: close` and reads one response, framed by
//! `Content-Length` (or chunked, or by the close), with every step bounded by
//! `agentTimeoutMs` and the body by [`MAX_BODY`].

use std::cell::Cell;
use std::io::{self, Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use edgeway_common::api::{
    ApiError, Attachment, AttachmentKey, Readiness, UnregisterResponse, ATTACHMENTS_PATH,
    READYZ_PATH,
};
use nix::sys::socket::{self, sockopt, AddressFamily, SockFlag, SockType, UnixAddr};
use nix::sys::time::TimeVal;

/// The agent's answers are small JSON documents; anything larger is not one.
pub const MAX_BODY: usize = 1 << 20;
/// Status line and headers together.
const MAX_HEAD: usize = 16 << 10;

/// Why a call to the agent did not succeed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum AgentError {
    /// No usable answer: the socket is missing, refused, timed out, or the agent answered
    /// 5xx or garbage. `onAgentDown` applies.
    #[error("edgeway agent at {socket} is unreachable: {reason}")]
    Down { socket: String, reason: String },
    /// The agent answered and refused.
    #[error("edgeway agent refused the request ({status}): {reason}")]
    Rejected { status: u16, reason: String },
}

pub struct AgentClient {
    socket: PathBuf,
    timeout: Duration,
    /// A connection opened ahead of the next request; see [`AgentClient::connect_early`].
    early: Cell<Option<io::Result<UnixStream>>>,
}

/// One parsed HTTP response.
#[derive(Debug, PartialEq, Eq)]
struct Response {
    status: u16,
    reason: String,
    body: Vec<u8>,
}

/// Why a response could not be parsed.
#[derive(Debug, PartialEq, Eq)]
enum ParseError {
    Malformed(String),
    /// The connection closed before the response was complete.
    Truncated,
    TooLarge,
}

impl std::fmt::Display for ParseError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ParseError::Malformed(m) => write!(f, "malformed HTTP response: {m}"),
            ParseError::Truncated => f.write_str("connection closed in the middle of the response"),
            ParseError::TooLarge => write!(f, "response larger than {MAX_BODY} bytes"),
        }
    }
}

impl AgentClient {
    pub fn new(socket: &Path, timeout: Duration) -> Result<Self, AgentError> {
        Ok(AgentClient {
            socket: socket.to_path_buf(),
            timeout,
            early: Cell::new(None),
        })
    }

    /// Connects now, for the next request to use. The agent accepts the connection while
    /// the plugin does its own work, so the request later waits only for the answer:
    /// that saved about 0.1 ms per ADD when the agent's CPU had been idle. A failed
    /// connect is kept and reported by that request, exactly as if it connected then.
    pub fn connect_early(&self) {
        self.early.set(Some(connect(&self.socket, self.timeout)));
    }

    fn down(&self, reason: impl std::fmt::Display) -> AgentError {
        AgentError::Down {
            socket: self.socket.display().to_string(),
            reason: reason.to_string(),
        }
    }

    fn send(&self, method: &str, path: &str, body: Option<&[u8]>) -> Result<Vec<u8>, AgentError> {
        let deadline = Instant::now() + self.timeout;
        let resp = self
            .exchange(method, path, body, deadline)
            .map_err(|e| self.down(e))?;
        if (200..300).contains(&resp.status) {
            return Ok(resp.body);
        }
        let reason = serde_json::from_slice::<ApiError>(&resp.body)
            .map(|e| e.error)
            .unwrap_or_else(|_| String::from_utf8_lossy(&resp.body).into_owned());
        if resp.status >= 500 {
            // A 5xx means the agent is not able to serve now; treat it like an absent agent.
            return Err(self.down(format!("{} {}: {reason}", resp.status, resp.reason)));
        }
        Err(AgentError::Rejected {
            status: resp.status,
            reason,
        })
    }

    /// One request on a fresh connection, and its response.
    fn exchange(
        &self,
        method: &str,
        path: &str,
        body: Option<&[u8]>,
        deadline: Instant,
    ) -> io::Result<Response> {
        let mut stream = match self.early.take() {
            Some(early) => early?,
            None => connect(&self.socket, self.timeout)?,
        };
        let body = body.unwrap_or_default();
        let mut req = format!(
            "{method} {path} HTTP/1.1\r\nHost: edgeway-agent\r\nConnection: close\r\n\
             Content-Length: {}\r\n",
            body.len()
        )
        .into_bytes();
        if !body.is_empty() {
            req.extend_from_slice(b"Content-Type: application/json\r\n");
        }
        req.extend_from_slice(b"\r\n");
        req.extend_from_slice(body);
        stream.set_write_timeout(Some(remaining(deadline)?))?;
        stream.write_all(&req)?;

        let mut buf = Vec::with_capacity(4096);
        let mut chunk = [0u8; 8192];
        loop {
            stream.set_read_timeout(Some(remaining(deadline)?))?;
            let n = match stream.read(&mut chunk) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                r => r?,
            };
            buf.extend_from_slice(&chunk[..n]);
            match parse_response(&buf, n == 0) {
                Ok(Some(resp)) => return Ok(resp),
                Ok(None) => {}
                Err(e) => return Err(io::Error::new(io::ErrorKind::InvalidData, e.to_string())),
            }
        }
    }

    pub fn register(&self, a: &Attachment) -> Result<(), AgentError> {
        let body = serde_json::to_vec(a).expect("attachment serializes");
        self.send("POST", ATTACHMENTS_PATH, Some(&body)).map(drop)
    }

    /// Returns the attachment the agent had, if any.
    pub fn unregister(&self, key: &AttachmentKey) -> Result<Option<Attachment>, AgentError> {
        let path = format!(
            "{ATTACHMENTS_PATH}/{}/{}",
            path_segment(&key.container_id),
            path_segment(&key.ifname)
        );
        let body = self.send("DELETE", &path, None)?;
        // An older agent may answer without the attachment: treat that as unknown.
        Ok(serde_json::from_slice::<UnregisterResponse>(&body)
            .ok()
            .and_then(|r| r.removed))
    }

    /// The agent's readiness. A not-ready agent answers 503 with its problems.
    pub fn readiness(&self) -> Result<Readiness, AgentError> {
        match self.send("GET", READYZ_PATH, None) {
            Ok(body) => serde_json::from_slice(&body).map_err(|e| AgentError::Rejected {
                status: 200,
                reason: format!("unreadable /readyz answer: {e}"),
            }),
            Err(AgentError::Down { reason, .. }) if reason.starts_with("503") => Ok(Readiness {
                ready: false,
                problems: vec![reason],
            }),
            Err(e) => Err(e),
        }
    }
}

fn remaining(deadline: Instant) -> io::Result<Duration> {
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        return Err(io::Error::new(io::ErrorKind::TimedOut, "timed out"));
    }
    Ok(left)
}

/// Connects with a bound wait. A missing or refused socket fails at once; a listener whose
/// backlog is full (a wedged agent) would block `connect`, which the kernel bounds by the
/// socket's send timeout, so that is set first.
fn connect(path: &Path, timeout: Duration) -> io::Result<UnixStream> {
    let fd: OwnedFd = socket::socket(
        AddressFamily::Unix,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC,
        None,
    )?;
    let tv = TimeVal::new(timeout.as_secs() as _, timeout.subsec_micros() as _);
    socket::setsockopt(&fd, sockopt::SendTimeout, &tv)?;
    let addr = UnixAddr::new(path)?;
    loop {
        match socket::connect(std::os::fd::AsRawFd::as_raw_fd(&fd), &addr) {
            Err(nix::errno::Errno::EINTR) => continue,
            // EAGAIN: the send timeout ran out while the backlog stayed full.
            Err(nix::errno::Errno::EAGAIN) => {
                return Err(io::Error::new(io::ErrorKind::TimedOut, "connect timed out"))
            }
            r => break r?,
        }
    }
    Ok(UnixStream::from(fd))
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn malformed(m: impl Into<String>) -> ParseError {
    ParseError::Malformed(m.into())
}

/// Parses one response from what has arrived so far. `Ok(None)`: incomplete, read more.
/// `eof`: the peer closed, so nothing more comes.
fn parse_response(buf: &[u8], eof: bool) -> Result<Option<Response>, ParseError> {
    let mut buf = buf;
    loop {
        let Some(end) = find(&buf[..buf.len().min(MAX_HEAD + 4)], b"\r\n\r\n") else {
            if buf.len() > MAX_HEAD {
                return Err(ParseError::TooLarge);
            }
            return if eof {
                Err(ParseError::Truncated)
            } else {
                Ok(None)
            };
        };
        let head =
            std::str::from_utf8(&buf[..end]).map_err(|_| malformed("headers are not UTF-8"))?;
        let rest = &buf[end + 4..];
        let mut lines = head.split("\r\n");
        let (status, reason) = parse_status_line(lines.next().unwrap_or_default())?;
        let mut length = None;
        let mut chunked = false;
        for line in lines {
            let (name, value) = line
                .split_once(':')
                .ok_or_else(|| malformed(format!("header line without a colon: {line:?}")))?;
            let value = value.trim();
            if name.eq_ignore_ascii_case("content-length") {
                let n: usize = value
                    .parse()
                    .map_err(|_| malformed(format!("Content-Length {value:?}")))?;
                if length.is_some_and(|l| l != n) {
                    return Err(malformed("conflicting Content-Length headers"));
                }
                length = Some(n);
            } else if name.eq_ignore_ascii_case("transfer-encoding") {
                chunked = value
                    .rsplit(',')
                    .next()
                    .is_some_and(|v| v.trim().eq_ignore_ascii_case("chunked"));
            }
        }
        // An interim answer (100 Continue): the real one follows it.
        if (100..200).contains(&status) {
            buf = rest;
            continue;
        }
        let body = if status == 204 || status == 304 {
            Some(Vec::new())
        } else if chunked {
            decode_chunked(rest)?
        } else if let Some(n) = length {
            if n > MAX_BODY {
                return Err(ParseError::TooLarge);
            }
            (rest.len() >= n).then(|| rest[..n].to_vec())
        } else if rest.len() > MAX_BODY {
            return Err(ParseError::TooLarge);
        } else {
            // No framing: the body runs to the close.
            eof.then(|| rest.to_vec())
        };
        return match body {
            Some(body) => Ok(Some(Response {
                status,
                reason: reason.to_string(),
                body,
            })),
            None if eof => Err(ParseError::Truncated),
            None => Ok(None),
        };
    }
}

/// `HTTP/1.1 200 OK`: the code and the reason phrase (which may be empty).
fn parse_status_line(line: &str) -> Result<(u16, &str), ParseError> {
    let bad = || malformed(format!("status line {line:?}"));
    let rest = line.strip_prefix("HTTP/1.").ok_or_else(bad)?;
    let (_minor, rest) = rest.split_once(' ').ok_or_else(bad)?;
    let (code, reason) = rest.split_once(' ').unwrap_or((rest, ""));
    if code.len() != 3 || !code.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    let code: u16 = code.parse().map_err(|_| bad())?;
    if code < 100 {
        return Err(bad());
    }
    Ok((code, reason))
}

/// A chunked body; `Ok(None)` while incomplete.
fn decode_chunked(mut rest: &[u8]) -> Result<Option<Vec<u8>>, ParseError> {
    let mut out = Vec::new();
    loop {
        let Some(eol) = find(rest, b"\r\n") else {
            return if rest.len() > 64 {
                Err(malformed("chunk size line too long"))
            } else {
                Ok(None)
            };
        };
        let line = std::str::from_utf8(&rest[..eol]).map_err(|_| malformed("chunk size"))?;
        let hex = line.split(';').next().unwrap_or_default().trim();
        let size =
            usize::from_str_radix(hex, 16).map_err(|_| malformed(format!("chunk size {hex:?}")))?;
        rest = &rest[eol + 2..];
        if size == 0 {
            // Trailers, if any, end with an empty line.
            if rest.starts_with(b"\r\n") {
                return Ok(Some(out));
            }
            return Ok(find(rest, b"\r\n\r\n").map(|_| out));
        }
        // Compared this way round so a huge chunk size cannot overflow.
        if size > MAX_BODY - out.len() {
            return Err(ParseError::TooLarge);
        }
        if rest.len() < size + 2 {
            return Ok(None);
        }
        if &rest[size..size + 2] != b"\r\n" {
            return Err(malformed("chunk without its CRLF"));
        }
        out.extend_from_slice(&rest[..size]);
        rest = &rest[size + 2..];
    }
}

/// Percent-encodes a path segment: interface names may hold `%`, `?` or `#`.
fn path_segment(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    for b in raw.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn path_segments_are_percent_encoded() {
        assert_eq!(path_segment("eth0"), "eth0");
        assert_eq!(path_segment("net?1"), "net%3F1");
        assert_eq!(path_segment("e%74h0"), "e%2574h0");
        assert_eq!(path_segment("a#b@c"), "a%23b%40c");
    }

    use super::*;

    fn done(raw: &[u8]) -> Response {
        parse_response(raw, false).unwrap().expect("complete")
    }

    #[test]
    fn status_line() {
        assert_eq!(parse_status_line("HTTP/1.1 200 OK").unwrap(), (200, "OK"));
        assert_eq!(
            parse_status_line("HTTP/1.0 503 Service Unavailable").unwrap(),
            (503, "Service Unavailable")
        );
        assert_eq!(parse_status_line("HTTP/1.1 204").unwrap(), (204, ""));
        for bad in [
            "",
            "HTTP/2 200 OK",
            "HTTP/1.1 20 OK",
            "HTTP/1.1 2000 OK",
            "HTTP/1.1 abc",
            "ICY 200 OK",
            "HTTP/1.1 099 x",
        ] {
            assert!(parse_status_line(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn content_length_frames_the_body() {
        let r = done(b"HTTP/1.1 201 Created\r\ncontent-type: application/json\r\nContent-Length: 2\r\n\r\n{}");
        assert_eq!(
            (r.status, r.reason.as_str(), r.body.as_slice()),
            (201, "Created", &b"{}"[..])
        );
        // Bytes after the body are not part of it.
        assert_eq!(
            done(b"HTTP/1.1 200 OK\r\nCONTENT-LENGTH: 1\r\n\r\nab").body,
            b"a"
        );
        assert_eq!(
            done(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n").body,
            b""
        );
        assert_eq!(done(b"HTTP/1.1 204 No Content\r\n\r\n").body, b"");
    }

    #[test]
    fn incomplete_until_everything_arrived() {
        let full = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello";
        for cut in 0..full.len() {
            assert_eq!(
                parse_response(&full[..cut], false),
                Ok(None),
                "cut at {cut}"
            );
            assert_eq!(
                parse_response(&full[..cut], true),
                Err(ParseError::Truncated),
                "cut at {cut}"
            );
        }
        assert_eq!(done(full).body, b"hello");
    }

    #[test]
    fn unframed_body_runs_to_the_close() {
        let raw = b"HTTP/1.1 200 OK\r\n\r\n{\"ready\":true}";
        assert_eq!(parse_response(raw, false), Ok(None));
        assert_eq!(
            parse_response(raw, true).unwrap().unwrap().body,
            b"{\"ready\":true}"
        );
    }

    #[test]
    fn chunked_body() {
        let raw = b"HTTP/1.1 503 Service Unavailable\r\nTransfer-Encoding: chunked\r\n\r\n3\r\n{\"a\r\n4;ext=1\r\n\":1}\r\n0\r\n\r\n";
        let r = done(raw);
        assert_eq!((r.status, r.body.as_slice()), (503, &b"{\"a\":1}"[..]));
        assert_eq!(parse_response(&raw[..raw.len() - 2], false), Ok(None));
        assert_eq!(
            parse_response(&raw[..raw.len() - 2], true),
            Err(ParseError::Truncated)
        );
        let bad = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n";
        assert!(matches!(
            parse_response(bad, false),
            Err(ParseError::Malformed(_))
        ));
    }

    #[test]
    fn interim_answer_is_skipped() {
        let r =
            done(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
        assert_eq!((r.status, r.body.as_slice()), (200, &b"ok"[..]));
    }

    #[test]
    fn oversized_answers_are_refused() {
        let raw = format!(
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n",
            MAX_BODY + 1
        );
        assert_eq!(
            parse_response(raw.as_bytes(), false),
            Err(ParseError::TooLarge)
        );
        let mut unframed = b"HTTP/1.1 200 OK\r\n\r\n".to_vec();
        unframed.resize(unframed.len() + MAX_BODY + 1, b'x');
        assert_eq!(parse_response(&unframed, false), Err(ParseError::TooLarge));
        let head = vec![b'a'; MAX_HEAD + 1];
        assert_eq!(parse_response(&head, false), Err(ParseError::TooLarge));
        let chunk = format!(
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n",
            MAX_BODY + 1
        );
        assert_eq!(
            parse_response(chunk.as_bytes(), false),
            Err(ParseError::TooLarge)
        );
    }

    #[test]
    fn malformed_headers() {
        for raw in [
            &b"HTTP/1.1 200 OK\r\nno colon here\r\n\r\n"[..],
            b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab",
            b"garbage\r\n\r\n",
        ] {
            assert!(
                matches!(parse_response(raw, false), Err(ParseError::Malformed(_))),
                "{raw:?}"
            );
        }
    }

    /// A real exchange with a one-shot server on a socket in a temp dir.
    fn serve_once(
        answer: &'static [u8],
    ) -> (tempfile::TempDir, PathBuf, std::thread::JoinHandle<Vec<u8>>) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("agent.sock");
        let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
        let t = std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            let mut req = Vec::new();
            let mut b = [0u8; 4096];
            while find(&req, b"\r\n\r\n").is_none() {
                let n = s.read(&mut b).unwrap();
                req.extend_from_slice(&b[..n]);
            }
            // The test requests carry at most a small body; take what else is there.
            s.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
            if let Ok(n) = s.read(&mut b) {
                req.extend_from_slice(&b[..n]);
            }
            s.write_all(answer).unwrap();
            req
        });
        (dir, path, t)
    }

    #[test]
    fn readiness_and_errors_over_a_socket() {
        let (_d, path, t) =
            serve_once(b"HTTP/1.1 200 OK\r\nContent-Length: 14\r\n\r\n{\"ready\":true}");
        let c = AgentClient::new(&path, Duration::from_secs(2)).unwrap();
        assert!(c.readiness().unwrap().ready);
        let req = String::from_utf8(t.join().unwrap()).unwrap();
        assert!(req.starts_with("GET /readyz HTTP/1.1\r\n"), "{req}");
        assert!(req.contains("Connection: close\r\n") && req.contains("Content-Length: 0\r\n"));

        let (_d, path, t) = serve_once(
            b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 26\r\n\r\n{\"ready\":false,\"problems\":",
        );
        let r = AgentClient::new(&path, Duration::from_secs(2))
            .unwrap()
            .readiness()
            .unwrap();
        assert!(
            !r.ready && r.problems[0].starts_with("503 Service Unavailable"),
            "{r:?}"
        );
        t.join().unwrap();

        let (_d, path, t) = serve_once(
            b"HTTP/1.1 400 Bad Request\r\nContent-Length: 17\r\n\r\n{\"error\":\"nope\"}\n",
        );
        let key = AttachmentKey {
            container_id: "c1".into(),
            ifname: "eth0".into(),
        };
        let e = AgentClient::new(&path, Duration::from_secs(2))
            .unwrap()
            .unregister(&key)
            .unwrap_err();
        assert!(
            matches!(&e, AgentError::Rejected { status: 400, reason } if reason == "nope"),
            "{e:?}"
        );
        let req = String::from_utf8(t.join().unwrap()).unwrap();
        assert!(
            req.starts_with("DELETE /v1/attachments/c1/eth0 HTTP/1.1\r\n"),
            "{req}"
        );
    }

    #[test]
    fn missing_socket_and_silent_agent_are_down() {
        let dir = tempfile::tempdir().unwrap();
        let c = AgentClient::new(&dir.path().join("none.sock"), Duration::from_secs(2)).unwrap();
        assert!(matches!(c.readiness(), Err(AgentError::Down { .. })));

        // Accepts and never answers: the timeout applies.
        let path = dir.path().join("silent.sock");
        let _listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
        let c = AgentClient::new(&path, Duration::from_millis(100)).unwrap();
        let start = Instant::now();
        let e = c.readiness().unwrap_err();
        assert!(matches!(e, AgentError::Down { .. }), "{e:?}");
        assert!(start.elapsed() < Duration::from_secs(2));
    }
}
