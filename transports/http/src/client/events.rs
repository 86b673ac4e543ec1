//! The client side of `GET /v1/sync/events`: reads server-sent events into a [`Subscription`].

use converge_core::Subscription;
use converge_core::wire::Notice;
use tokio::sync::mpsc;

use super::classify;
use crate::error::Error;

/// The longest line the reader buffers; a server sending more without a newline is not an SSE
/// server.
const MAX_LINE: usize = 64 << 10;

/// One event: its name (`message` when unnamed) and its data lines joined by `\n`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SseEvent {
    pub(crate) event: String,
    pub(crate) data: String,
}

/// Splits a byte stream into events (the WHATWG event-stream format: `field: value` lines, a
/// blank line ends an event, lines starting with `:` are comments).
#[derive(Debug, Default)]
pub(crate) struct SseReader {
    buf: Vec<u8>,
    event: String,
    data: Option<String>,
}

impl SseReader {
    /// Reads `chunk`, appending each event it completes to `out`.
    pub(crate) fn feed(&mut self, chunk: &[u8], out: &mut Vec<SseEvent>) -> Result<(), Error> {
        self.buf.extend_from_slice(chunk);
        while let Some(end) = self.buf.iter().position(|&b| b == b'\n') {
            let raw: Vec<u8> = self.buf.drain(..=end).collect();
            let line = raw[..end].strip_suffix(b"\r").unwrap_or(&raw[..end]);
            let line = String::from_utf8_lossy(line);
            if line.is_empty() {
                if let Some(data) = self.data.take() {
                    let event = std::mem::take(&mut self.event);
                    out.push(SseEvent { event: if event.is_empty() { "message".into() } else { event }, data });
                }
                self.event.clear();
                continue;
            }
            if line.starts_with(':') {
                continue;
            }
            let (field, value) = match line.split_once(':') {
                Some((field, value)) => (field, value.strip_prefix(' ').unwrap_or(value)),
                None => (&*line, ""),
            };
            match field {
                "event" => value.clone_into(&mut self.event),
                "data" => match &mut self.data {
                    Some(data) => {
                        data.push('\n');
                        data.push_str(value);
                    }
                    None => self.data = Some(value.to_owned()),
                },
                _ => {}
            }
        }
        if self.buf.len() > MAX_LINE {
            return Err(Error::Protocol(format!("an event-stream line over {MAX_LINE} bytes")));
        }
        Ok(())
    }
}

/// Reads the open event stream `resp` into a subscription, until the server ends it, the
/// connection fails (the subscription then ends with an offline error) or the subscriber leaves.
pub(crate) fn spawn_reader(mut resp: reqwest::Response) -> Subscription {
    let (tx, subscription) = Subscription::channel();
    tokio::spawn(async move {
        let mut reader = SseReader::default();
        let mut events = Vec::new();
        loop {
            let chunk = tokio::select! {
                chunk = resp.chunk() => chunk,
                () = tx.closed() => return,
            };
            let bytes = match chunk {
                Ok(Some(bytes)) => bytes,
                Ok(None) => return,
                Err(e) => return fail(&tx, classify::transport(e)).await,
            };
            if let Err(e) = reader.feed(&bytes, &mut events) {
                return fail(&tx, e).await;
            }
            for event in events.drain(..) {
                if event.event != "changes" {
                    continue;
                }
                let notice = match serde_json::from_str::<Notice>(&event.data) {
                    Ok(notice) => notice,
                    Err(e) => {
                        let what = converge_core::model::json_error_without_values(&e);
                        return fail(&tx, Error::Protocol(format!("a notice did not parse: {what}"))).await;
                    }
                };
                if tx.send(Ok(notice)).await.is_err() {
                    return;
                }
            }
        }
    });
    subscription
}

async fn fail(tx: &mpsc::Sender<converge_core::Result<Notice>>, e: Error) {
    let _ = tx.send(Err(e.into())).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(chunks: &[&str]) -> Vec<SseEvent> {
        let mut reader = SseReader::default();
        let mut out = Vec::new();
        for c in chunks {
            reader.feed(c.as_bytes(), &mut out).unwrap();
        }
        out
    }

    #[test]
    fn events_split_across_chunks_comments_and_crlf() {
        let got = read(&[
            ": keepalive\n\nid: c5\nevent: chan",
            "ges\r\ndata: {\"cursor\":",
            "\"c5\"}\n\n",
            "data: a\ndata: b\n\n",
            "event: other\n\n",
        ]);
        assert_eq!(
            got,
            vec![
                SseEvent { event: "changes".into(), data: "{\"cursor\":\"c5\"}".into() },
                SseEvent { event: "message".into(), data: "a\nb".into() },
            ]
        );
    }

    #[test]
    fn an_endless_line_is_refused() {
        let mut reader = SseReader::default();
        let long = vec![b'x'; MAX_LINE + 1];
        assert!(matches!(reader.feed(&long, &mut Vec::new()), Err(Error::Protocol(_))));
    }
}
