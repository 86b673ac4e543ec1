//! Just enough HTTP/1.1 for the proxy: reading one request, rewriting a response to close, and
//! the problem+json answers the proxy makes itself.

use std::io;

use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

use super::{MAX_BODY, MAX_HEAD};

/// A problem+json answer made by the proxy itself.
pub(super) fn problem(status: u16, title: &str, code: &str, extra: &[(&str, &str)]) -> Vec<u8> {
    let body = serde_json::json!({
        "type": "about:blank", "title": title, "status": status, "code": code,
        "detail": "injected by the test proxy",
    })
    .to_string();
    let mut head = format!(
        "HTTP/1.1 {status} {title}\r\ncontent-type: application/problem+json\r\ncontent-length: {}\r\n",
        body.len()
    );
    for (name, value) in extra {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("connection: close\r\n\r\n");
    let mut out = head.into_bytes();
    out.extend_from_slice(body.as_bytes());
    out
}

/// Headers that describe one connection, dropped when a message is passed on.
fn hop_by_hop(name: &str) -> bool {
    ["connection", "keep-alive", "proxy-connection"].iter().any(|h| name.eq_ignore_ascii_case(h))
}

/// The response's status and its bytes with `connection: close` instead of any connection
/// headers; `None` if it is not a whole HTTP response head.
pub(super) fn closing_response(raw: &[u8]) -> Option<(u16, Vec<u8>)> {
    let end = find(raw, b"\r\n\r\n")?;
    let head = std::str::from_utf8(&raw[..end]).ok()?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next()?;
    let status = status_line.split(' ').nth(1)?.parse().ok()?;
    let mut out = Vec::with_capacity(raw.len() + 32);
    out.extend_from_slice(status_line.as_bytes());
    out.extend_from_slice(b"\r\n");
    for line in lines.filter(|l| !hop_by_hop(l.split(':').next().unwrap_or("").trim())) {
        out.extend_from_slice(line.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"connection: close\r\n\r\n");
    out.extend_from_slice(&raw[end + 4..]);
    Some((status, out))
}

pub(super) fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// One parsed request.
pub(super) struct Request {
    pub(super) method: String,
    pub(super) target: String,
    pub(super) path: String,
    pub(super) version: String,
    pub(super) headers: Vec<(String, String)>,
    pub(super) body: Vec<u8>,
}

impl Request {
    pub(super) fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    /// The head to send upstream: the same request, asking the server to close after answering.
    pub(super) fn upstream_head(&self) -> Vec<u8> {
        let mut head = format!("{} {} {}\r\n", self.method, self.target, self.version);
        for (name, value) in self.headers.iter().filter(|(n, _)| !hop_by_hop(n)) {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        head.push_str("Connection: close\r\n\r\n");
        head.into_bytes()
    }
}

fn invalid(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.to_owned())
}

/// Reads one request: the head up to CRLFCRLF, then `Content-Length` bytes of body. `None` if
/// the client closed before sending anything.
pub(super) async fn read_request(client: &mut TcpStream) -> io::Result<Option<Request>> {
    let mut buf = Vec::with_capacity(4096);
    let mut chunk = [0u8; 8192];
    let head_end = loop {
        if let Some(i) = find(&buf, b"\r\n\r\n") {
            break i;
        }
        if buf.len() > MAX_HEAD {
            return Err(invalid("request head too long"));
        }
        let n = client.read(&mut chunk).await?;
        if n == 0 {
            return if buf.is_empty() { Ok(None) } else { Err(invalid("closed inside the request head")) };
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = std::str::from_utf8(&buf[..head_end]).map_err(|_| invalid("request head is not UTF-8"))?;
    let mut lines = head.split("\r\n");
    let mut request_line = lines.next().unwrap_or("").split(' ');
    let (Some(method), Some(target), Some(version)) = (request_line.next(), request_line.next(), request_line.next())
    else {
        return Err(invalid("bad request line"));
    };
    let headers = lines
        .map(|l| l.split_once(':').map(|(n, v)| (n.trim().to_owned(), v.trim().to_owned())))
        .collect::<Option<Vec<_>>>()
        .ok_or_else(|| invalid("bad header line"))?;
    let mut req = Request {
        method: method.to_owned(),
        target: target.to_owned(),
        path: target.split('?').next().unwrap_or(target).to_owned(),
        version: version.to_owned(),
        headers,
        body: Vec::new(),
    };
    if req.header("transfer-encoding").is_some() {
        return Err(invalid("only bodies with Content-Length are supported"));
    }
    let len = match req.header("content-length") {
        Some(v) => v.parse::<usize>().map_err(|_| invalid("bad Content-Length"))?,
        None => 0,
    };
    if len > MAX_BODY {
        return Err(invalid("body too large for the proxy"));
    }
    let mut body = buf.split_off(head_end + 4);
    while body.len() < len {
        let n = client.read(&mut chunk).await?;
        if n == 0 {
            return Err(invalid("closed inside the request body"));
        }
        body.extend_from_slice(&chunk[..n]);
    }
    body.truncate(len);
    req.body = body;
    Ok(Some(req))
}
