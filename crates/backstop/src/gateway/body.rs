//! [`GatewayBody`]: the body of what the gateway answers.

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::Body;
use http_body_util::Full;

use crate::Error;
use crate::client::ResponseBody;

/// The gateway's response body: the upstream's, or a short local answer.
#[derive(Debug)]
pub enum GatewayBody {
    /// The upstream's body, streamed.
    Upstream(ResponseBody),
    /// An answer made by the gateway itself.
    Local(Full<Bytes>),
}

impl Body for GatewayBody {
    type Data = Bytes;
    type Error = Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, Error>>> {
        match self.get_mut() {
            GatewayBody::Upstream(body) => Pin::new(body).poll_frame(cx),
            GatewayBody::Local(body) => Pin::new(body)
                .poll_frame(cx)
                .map_err(|never: Infallible| match never {}),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            GatewayBody::Upstream(body) => body.is_end_stream(),
            GatewayBody::Local(body) => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> http_body::SizeHint {
        match self {
            GatewayBody::Upstream(body) => body.size_hint(),
            GatewayBody::Local(body) => body.size_hint(),
        }
    }
}
