//! JSON in and out of a [`Client`] (the `config` feature, which brings serde and serde_json):
//! [`Client::post_json`] / [`Client::put_json`] and [`JsonBodyExt::json`].

use std::future::Future;

use backstop_classify::{Error, Kind, Phase};
use bytes::Bytes;
use http::header::{CONTENT_TYPE, HeaderValue};
use http::{Method, Response};
use http_body::Body;
use http_body_util::BodyExt;
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::{Client, ResponseBody, request};

/// The largest response body [`JsonBodyExt::json`] reads: 2 MiB. A larger one fails the read
/// with a local error rather than growing memory without bound; [`JsonBodyExt::json_limited`]
/// takes another bound.
pub const JSON_BODY_LIMIT: usize = 2 * 1024 * 1024;

impl Client {
    /// `POST url` with `value` serialised as JSON, `content-type: application/json`.
    ///
    /// A value serde cannot serialise (a map with non-string keys, a failing `Serialize`) is an
    /// [`Error`] of `Kind::Other` in `Phase::Local`: nothing is sent.
    pub async fn post_json<T>(&self, url: &str, value: &T) -> Result<Response<ResponseBody>, Error>
    where
        T: Serialize + ?Sized,
    {
        self.send_json(Method::POST, url, value).await
    }

    /// `PUT url` with `value` serialised as JSON; see [`Client::post_json`].
    pub async fn put_json<T>(&self, url: &str, value: &T) -> Result<Response<ResponseBody>, Error>
    where
        T: Serialize + ?Sized,
    {
        self.send_json(Method::PUT, url, value).await
    }

    async fn send_json<T>(
        &self,
        method: Method,
        url: &str,
        value: &T,
    ) -> Result<Response<ResponseBody>, Error>
    where
        T: Serialize + ?Sized,
    {
        let body = serde_json::to_vec(value).map_err(local)?;
        let mut req = request(method, url, Bytes::from(body))?;
        req.headers_mut()
            .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        self.send(req).await
    }
}

/// Reads a [`ResponseBody`] (or a whole response) as JSON: `res.json::<T>().await`.
///
/// The body is read to its end, bounded ([`JSON_BODY_LIMIT`] by default), then deserialised.
/// A transport failure while reading is the client's classified [`Error`] as it came (its
/// deadline and idle bounds apply); a body over the bound is `Kind::Other` in
/// `Phase::ReadBody`; bytes that are not a `T` are `Kind::Other` in `Phase::Local`. The status
/// is not looked at: check it first when an error body is not a `T`.
///
/// ```no_run
/// use backstop::JsonBodyExt;
///
/// #[derive(serde::Deserialize)]
/// struct Order {
///     id: u64,
/// }
///
/// # async fn demo(client: backstop::Client) -> Result<(), backstop::Error> {
/// let order: Order = client.get("http://127.0.0.1:3000/orders/7").await?.json().await?;
/// println!("order {}", order.id);
/// # Ok(())
/// # }
/// ```
pub trait JsonBodyExt: sealed::Sealed + Sized {
    /// The body as a `T`, read up to [`JSON_BODY_LIMIT`] bytes.
    fn json<T>(self) -> impl Future<Output = Result<T, Error>> + Send
    where
        T: DeserializeOwned,
    {
        self.json_limited(JSON_BODY_LIMIT)
    }

    /// The body as a `T`, read up to `max_bytes` bytes.
    fn json_limited<T>(self, max_bytes: usize) -> impl Future<Output = Result<T, Error>> + Send
    where
        T: DeserializeOwned;
}

impl JsonBodyExt for ResponseBody {
    async fn json_limited<T>(self, max_bytes: usize) -> Result<T, Error>
    where
        T: DeserializeOwned,
    {
        let bytes = read_limited(self, max_bytes).await?;
        serde_json::from_slice(&bytes).map_err(local)
    }
}

impl JsonBodyExt for Response<ResponseBody> {
    fn json_limited<T>(self, max_bytes: usize) -> impl Future<Output = Result<T, Error>> + Send
    where
        T: DeserializeOwned,
    {
        self.into_body().json_limited(max_bytes)
    }
}

/// The whole body, failing as soon as it is known to exceed `max_bytes`.
async fn read_limited(mut body: ResponseBody, max_bytes: usize) -> Result<Bytes, Error> {
    // A declared length over the bound fails before a byte is read.
    if body.size_hint().lower() > max_bytes as u64 {
        return Err(too_large(max_bytes));
    }
    let mut first: Option<Bytes> = None;
    let mut rest: Vec<u8> = Vec::new();
    let mut len = 0usize;
    while let Some(frame) = body.frame().await {
        let Ok(data) = frame?.into_data() else {
            // Trailers carry nothing to parse.
            continue;
        };
        len = len.saturating_add(data.len());
        if len > max_bytes {
            return Err(too_large(max_bytes));
        }
        // The common single-chunk body is parsed where it lies; only a second chunk copies.
        match first.take() {
            None if rest.is_empty() => first = Some(data),
            Some(head) => {
                rest.reserve(len);
                rest.extend_from_slice(&head);
                rest.extend_from_slice(&data);
            }
            None => rest.extend_from_slice(&data),
        }
    }
    Ok(first.unwrap_or_else(|| Bytes::from(rest)))
}

/// A body over the bound: why, as the error's source.
#[derive(Debug)]
struct TooLarge(usize);

impl std::fmt::Display for TooLarge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "response body exceeds the JSON read limit of {} bytes",
            self.0
        )
    }
}

impl std::error::Error for TooLarge {}

fn too_large(max_bytes: usize) -> Error {
    Error::new(Kind::Other, Phase::ReadBody).with_source(TooLarge(max_bytes))
}

fn local(err: serde_json::Error) -> Error {
    Error::new(Kind::Other, Phase::Local).with_source(err)
}

mod sealed {
    pub trait Sealed {}
    impl Sealed for super::ResponseBody {}
    impl Sealed for http::Response<super::ResponseBody> {}
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use http_body_util::Full;

    /// A body of these chunks, with no declared length.
    struct Chunks(std::collections::VecDeque<&'static [u8]>);

    impl Body for Chunks {
        type Data = Bytes;
        type Error = Error;

        fn poll_frame(
            mut self: std::pin::Pin<&mut Self>,
            _cx: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, Error>>> {
            let chunk = self.0.pop_front();
            std::task::Poll::Ready(chunk.map(|c| Ok(http_body::Frame::data(Bytes::from_static(c)))))
        }
    }

    fn body(chunks: &[&'static [u8]]) -> ResponseBody {
        ResponseBody::new(Chunks(chunks.iter().copied().collect()))
    }

    #[tokio::test]
    async fn split_and_single_bodies_parse_and_the_bound_holds() {
        let v: Vec<u32> = body(&[b"[1,", b"2,3]"]).json().await.unwrap();
        assert_eq!(v, [1, 2, 3]);
        let v: Vec<u32> = body(&[b"[4]"]).json().await.unwrap();
        assert_eq!(v, [4]);
        // One byte over the bound, split over chunks: refused while reading.
        let err = body(&[b"[1,", b"2]"])
            .json_limited::<Vec<u32>>(4)
            .await
            .unwrap_err();
        assert_eq!((err.kind(), err.phase()), (Kind::Other, Phase::ReadBody));
        // A declared length over the bound: refused before reading.
        let declared = ResponseBody::new(Full::new(Bytes::from_static(b"[1,2,3]")));
        let err = declared.json_limited::<Vec<u32>>(6).await.unwrap_err();
        assert_eq!(err.phase(), Phase::ReadBody);
        // Exactly at the bound is fine.
        let ok: Vec<u32> = body(&[b"[1,", b"2]"]).json_limited(5).await.unwrap();
        assert_eq!(ok, [1, 2]);
        // Not a `T`: a local error, no panic.
        let err = body(&[b"{\"a\":"]).json::<Vec<u32>>().await.unwrap_err();
        assert_eq!((err.kind(), err.phase()), (Kind::Other, Phase::Local));
    }

    #[test]
    fn an_unserialisable_value_is_a_local_error_and_nothing_is_sent() {
        let client = Client::builder().max_attempts(1).build().unwrap();
        // JSON object keys must be strings: serde_json refuses a map keyed by tuples.
        let map: std::collections::BTreeMap<(u8, u8), u8> = [((1, 2), 3)].into();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        // Port 9 on loopback: nothing is connected to, the serialisation fails first.
        let err = rt
            .block_on(client.post_json("http://127.0.0.1:9/", &map))
            .unwrap_err();
        assert_eq!((err.kind(), err.phase()), (Kind::Other, Phase::Local));
    }
}
