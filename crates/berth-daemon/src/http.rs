//! HTTP plumbing: the response body type (whole or streamed), JSON helpers, query
//! parsing, and bridges between async bodies and the blocking code that reads or
//! writes archives.

use crate::error::EngineError;
use bytes::Bytes;
use http::{header, Response, StatusCode};
use http_body::{Body as HttpBody, Frame};
use http_body_util::BodyExt;
use serde::Serialize;
use std::collections::HashMap;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::sync::mpsc;

/// A response body: a single buffer, or chunks from a channel (streams, archives).
pub enum Body {
    Full(Option<Bytes>),
    Channel(mpsc::Receiver<Bytes>),
    /// a channel whose first chunk was already taken (see [`stream_when_started`])
    Started(Option<Bytes>, mpsc::Receiver<Bytes>),
}

impl Body {
    pub fn empty() -> Self {
        Body::Full(None)
    }
}

impl HttpBody for Body {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        match self.get_mut() {
            Body::Full(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
            Body::Channel(rx) => rx.poll_recv(cx).map(|o| o.map(|b| Ok(Frame::data(b)))),
            Body::Started(first, rx) => match first.take() {
                Some(b) => Poll::Ready(Some(Ok(Frame::data(b)))),
                None => rx.poll_recv(cx).map(|o| o.map(|b| Ok(Frame::data(b)))),
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self, Body::Full(None))
    }

    fn size_hint(&self) -> http_body::SizeHint {
        match self {
            Body::Full(Some(b)) => http_body::SizeHint::with_exact(b.len() as u64),
            Body::Full(None) => http_body::SizeHint::with_exact(0),
            Body::Channel(_) | Body::Started(..) => http_body::SizeHint::default(),
        }
    }
}

pub type Resp = Response<Body>;

pub fn json<T: Serialize + ?Sized>(status: StatusCode, v: &T) -> Resp {
    let bytes = serde_json::to_vec(v).unwrap_or_else(|_| b"{}".to_vec());
    let mut b = bytes;
    b.push(b'\n');
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::Full(Some(Bytes::from(b))))
        .unwrap_or_else(|_| Response::new(Body::empty()))
}

pub fn ok_json<T: Serialize + ?Sized>(v: &T) -> Resp {
    json(StatusCode::OK, v)
}

pub fn status_only(status: StatusCode) -> Resp {
    let mut r = Response::new(Body::empty());
    *r.status_mut() = status;
    r
}

/// The Docker API's status for an engine error of `kind`: the one place the engine's
/// errors become HTTP.
pub fn status_of(kind: crate::error::Kind) -> StatusCode {
    use crate::error::Kind;
    match kind {
        Kind::Invalid => StatusCode::BAD_REQUEST,
        Kind::NotFound => StatusCode::NOT_FOUND,
        Kind::Conflict => StatusCode::CONFLICT,
        Kind::NotModified => StatusCode::NOT_MODIFIED,
        Kind::Forbidden => StatusCode::FORBIDDEN,
        Kind::Unauthorized => StatusCode::UNAUTHORIZED,
        Kind::NotImplemented => StatusCode::NOT_IMPLEMENTED,
        Kind::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        Kind::Internal => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

pub fn error_response(e: &EngineError) -> Resp {
    json(
        status_of(e.kind),
        &serde_json::json!({ "message": e.message }),
    )
}

/// A streamed response with the given content type, fed through the returned sender.
pub fn stream(content_type: &str) -> (mpsc::Sender<Bytes>, Resp) {
    let (tx, rx) = mpsc::channel(16);
    let resp = Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, content_type)
        .body(Body::Channel(rx))
        .unwrap_or_else(|_| Response::new(Body::empty()));
    (tx, resp)
}

/// A streamed response whose head waits for the work's first chunk, as dockerd's
/// streams do: an error the work reports on `early` before writing anything becomes the
/// response's status and message instead (clients raise it as an API error), while one
/// after output has started can only go into the stream.
pub async fn stream_when_started(
    content_type: &str,
    mut rx: mpsc::Receiver<Bytes>,
    early: tokio::sync::oneshot::Receiver<EngineError>,
) -> Result<Resp, EngineError> {
    // the early error first: when it is there, nothing was (or will be) written
    let first = tokio::select! {
        biased;
        e = early => match e {
            Ok(e) => return Err(e),
            Err(_) => rx.recv().await,
        },
        first = rx.recv() => first,
    };
    Ok(Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, content_type)
        .body(Body::Started(first, rx))
        .unwrap_or_else(|_| Response::new(Body::empty())))
}

/// Renames the keys of a JSON object that match one of `names` but for case to that
/// name, as Go's JSON decoding (dockerd's) matches field names without case.
pub fn canonical_keys(v: &mut serde_json::Value, names: &[&str]) {
    let Some(m) = v.as_object_mut() else { return };
    let odd: Vec<(String, &str)> = m
        .keys()
        .filter_map(|k| {
            names
                .iter()
                .find(|n| **n != k.as_str() && n.eq_ignore_ascii_case(k))
                .map(|n| (k.clone(), *n))
        })
        .collect();
    for (k, n) in odd {
        if let Some(val) = m.remove(&k) {
            m.entry(n.to_string()).or_insert(val);
        }
    }
}

/// Query parameters; repeated keys keep every value.
#[derive(Debug, Default)]
pub struct Query {
    pairs: Vec<(String, String)>,
}

impl Query {
    pub fn parse(q: Option<&str>) -> Self {
        Query {
            pairs: q
                .map(|q| {
                    url::form_urlencoded::parse(q.as_bytes())
                        .into_owned()
                        .collect()
                })
                .unwrap_or_default(),
        }
    }

    pub fn get(&self, k: &str) -> Option<&str> {
        self.pairs
            .iter()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.as_str())
    }

    pub fn all(&self, k: &str) -> Vec<String> {
        self.pairs
            .iter()
            .filter(|(key, _)| key == k)
            .map(|(_, v)| v.clone())
            .collect()
    }

    /// Docker's booleans: `1`, `true`, `True` are true; empty or absent is false.
    pub fn bool(&self, k: &str) -> Result<bool, EngineError> {
        match self.get(k) {
            None | Some("") => Ok(false),
            Some("1" | "true" | "True" | "TRUE" | "yes") => Ok(true),
            Some("0" | "false" | "False" | "FALSE" | "no") => Ok(false),
            Some(v) => Err(EngineError::invalid(format!(
                "invalid value for {k}: {v:?} is not a boolean"
            ))),
        }
    }

    pub fn int(&self, k: &str) -> Result<Option<i64>, EngineError> {
        match self.get(k) {
            None | Some("") => Ok(None),
            Some(v) => v.parse().map(Some).map_err(|_| {
                EngineError::invalid(format!("invalid value for {k}: {v:?} is not an integer"))
            }),
        }
    }

    /// The `filters` parameter: `{"key":["v1","v2"]}` or the old `{"key":{"v":true}}`.
    pub fn filters(&self) -> Result<Filters, EngineError> {
        let Some(raw) = self.get("filters").filter(|s| !s.is_empty()) else {
            return Ok(Filters::default());
        };
        let v: serde_json::Value = serde_json::from_str(raw)
            .map_err(|e| EngineError::invalid(format!("invalid filter: {e}")))?;
        let obj = v
            .as_object()
            .ok_or_else(|| EngineError::invalid("invalid filter: want a JSON object"))?;
        let mut out = HashMap::new();
        for (k, vals) in obj {
            let list: Vec<String> = match vals {
                serde_json::Value::Array(a) => a
                    .iter()
                    .map(|x| x.as_str().map(str::to_string))
                    .collect::<Option<_>>()
                    .ok_or_else(|| EngineError::invalid(format!("invalid filter {k:?}")))?,
                serde_json::Value::Object(m) => m
                    .iter()
                    .filter(|(_, on)| on.as_bool() == Some(true))
                    .map(|(v, _)| v.clone())
                    .collect(),
                _ => return Err(EngineError::invalid(format!("invalid filter {k:?}"))),
            };
            out.insert(k.clone(), list);
        }
        Ok(Filters { map: out })
    }
}

#[derive(Debug, Default, Clone)]
pub struct Filters {
    map: HashMap<String, Vec<String>>,
}

impl Filters {
    pub fn get(&self, k: &str) -> &[String] {
        self.map.get(k).map(Vec::as_slice).unwrap_or(&[])
    }
    pub fn contains(&self, k: &str) -> bool {
        self.map.contains_key(k)
    }
    /// Refuses filter keys the endpoint does not know, as Docker does.
    pub fn only(&self, allowed: &[&str]) -> Result<(), EngineError> {
        for k in self.map.keys() {
            if !allowed.contains(&k.as_str()) {
                return Err(EngineError::invalid(format!("invalid filter '{k}'")));
            }
        }
        Ok(())
    }
    /// `label=key` or `label=key=value` against a label map.
    pub fn labels_match(
        &self,
        key: &str,
        labels: &serde_json::Map<String, serde_json::Value>,
    ) -> bool {
        self.get(key).iter().all(|f| match f.split_once('=') {
            Some((k, v)) => labels.get(k).and_then(|x| x.as_str()) == Some(v),
            None => labels.contains_key(f.as_str()),
        })
    }
}

/// A blocking `Read` over a request body, fed by an async task.
pub struct BodyReader {
    rx: mpsc::Receiver<Result<Bytes, io::Error>>,
    cur: Bytes,
}

impl io::Read for BodyReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.cur.is_empty() {
            match self.rx.blocking_recv() {
                Some(Ok(b)) => self.cur = b,
                Some(Err(e)) => return Err(e),
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.cur.len());
        buf[..n].copy_from_slice(&self.cur[..n]);
        self.cur = self.cur.slice(n..);
        Ok(n)
    }
}

impl BodyReader {
    /// Reads what is left of the body and drops it. An archive ends at its end blocks,
    /// but clients still send padding and the chunked trailer after them: answering
    /// before they have finished writing makes them see a broken pipe, not the answer.
    pub fn drain(&mut self) {
        let _ = io::copy(self, &mut io::sink());
    }
}

/// A request's body, as handlers get it. One dropped before its end (a request refused
/// before its body was read, say) is read to its end in the background, so a client still
/// sending it reads the answer rather than a broken pipe (Docker's Go client sends
/// whole build contexts after parameters the daemon refuses).
pub struct ReqBody(Option<hyper::body::Incoming>);

impl ReqBody {
    pub fn new(b: hyper::body::Incoming) -> Self {
        ReqBody(Some(b))
    }
}

impl HttpBody for ReqBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        match self.get_mut().0.as_mut() {
            Some(b) => Pin::new(b).poll_frame(cx),
            None => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.0.as_ref().is_none_or(HttpBody::is_end_stream)
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.0
            .as_ref()
            .map(HttpBody::size_hint)
            .unwrap_or_else(|| http_body::SizeHint::with_exact(0))
    }
}

impl Drop for ReqBody {
    fn drop(&mut self) {
        if let Some(b) = self.0.take().filter(|b| !b.is_end_stream()) {
            if let Ok(rt) = tokio::runtime::Handle::try_current() {
                rt.spawn(discard(b));
            }
        }
    }
}

/// Reads a request body to its end and drops it: a request refused before its body was
/// read still lets the client finish sending (else it sees a broken pipe, not the
/// answer).
pub async fn discard<B>(mut body: B)
where
    B: HttpBody<Data = Bytes> + Unpin,
{
    while let Some(Ok(_)) = body.frame().await {}
}

/// Pumps `body` into a [`BodyReader`] for blocking code.
pub fn body_reader<B>(body: B) -> BodyReader
where
    B: HttpBody<Data = Bytes> + Send + Unpin + 'static,
    B::Error: std::fmt::Display + Send,
{
    let (tx, rx) = mpsc::channel(8);
    tokio::spawn(async move {
        let mut body = body;
        while let Some(frame) = body.frame().await {
            let item = match frame {
                Ok(f) => match f.into_data() {
                    Ok(d) => Ok(d),
                    Err(_) => continue,
                },
                Err(e) => Err(io::Error::other(format!("reading request body: {e}"))),
            };
            if item.is_err() {
                let _ = tx.send(item).await;
                break;
            }
            if tx.send(item).await.is_err() {
                // the reader stopped early (an error, or all it needed was read, like a
                // build context's tar before its padding): the client may finish
                // sending, and reads the answer instead of a broken pipe
                discard(body).await;
                break;
            }
        }
    });
    BodyReader {
        rx,
        cur: Bytes::new(),
    }
}

/// A blocking `Write` that feeds a streamed response.
pub struct ChannelWriter {
    tx: mpsc::Sender<Bytes>,
    buf: Vec<u8>,
}

impl ChannelWriter {
    pub fn new(tx: mpsc::Sender<Bytes>) -> Self {
        ChannelWriter {
            tx,
            buf: Vec::with_capacity(256 << 10),
        }
    }
}

impl io::Write for ChannelWriter {
    fn write(&mut self, b: &[u8]) -> io::Result<usize> {
        self.buf.extend_from_slice(b);
        if self.buf.len() >= 256 << 10 {
            self.flush()?;
        }
        Ok(b.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = Bytes::from(std::mem::replace(
            &mut self.buf,
            Vec::with_capacity(256 << 10),
        ));
        self.tx
            .blocking_send(chunk)
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "client went away"))
    }
}

impl Drop for ChannelWriter {
    fn drop(&mut self) {
        let _ = io::Write::flush(self);
    }
}

/// One JSON message line of a progress stream (`{"status": ...}`, `{"stream": ...}`,
/// `{"errorDetail": ...}`).
pub fn json_line(v: &serde_json::Value) -> Bytes {
    let mut b = serde_json::to_vec(v).unwrap_or_default();
    b.extend_from_slice(b"\r\n");
    Bytes::from(b)
}

pub fn error_line(msg: &str) -> Bytes {
    json_line(&serde_json::json!({"errorDetail": {"message": msg}, "error": msg}))
}
