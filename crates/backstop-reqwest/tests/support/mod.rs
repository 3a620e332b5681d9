//! What the tests share: the methods of the fault matrix, an attempt counter, and how an outcome
//! is written (as `tests/tests/fault_matrix.rs` writes backstop's client's).
#![allow(clippy::unwrap_used, clippy::expect_used, dead_code, unreachable_pub)]

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use backstop_reqwest::Kind;
use http::Extensions;
use reqwest_middleware::{ClientWithMiddleware, Middleware, Next, RequestBuilder};

/// The methods of the fault matrix.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Call {
    Get,
    Put,
    Delete,
    Post,
    PostWithKey,
}

pub const CALLS: [Call; 5] = [
    Call::Get,
    Call::Put,
    Call::Delete,
    Call::Post,
    Call::PostWithKey,
];

impl Call {
    pub fn name(self) -> &'static str {
        match self {
            Call::Get => "GET",
            Call::Put => "PUT",
            Call::Delete => "DELETE",
            Call::Post => "POST",
            Call::PostWithKey => "POST + key",
        }
    }

    /// The matrix's request: the same JSON body for every method, a key on the keyed POST.
    pub fn request(self, client: &ClientWithMiddleware, url: &str) -> RequestBuilder {
        let builder = match self {
            Call::Get => client.get(url),
            Call::Put => client.put(url),
            Call::Delete => client.delete(url),
            Call::Post | Call::PostWithKey => client.post(url),
        };
        let builder = builder.body("{\"amount\": 42}");
        if self == Call::PostWithKey {
            builder.header("idempotency-key", "matrix-key")
        } else {
            builder
        }
    }
}

/// Counts the attempts that pass it: placed after a retrying middleware, once per attempt.
#[derive(Clone, Default)]
pub struct CountAttempts(pub Arc<AtomicU32>);

impl CountAttempts {
    pub fn take(&self) -> u32 {
        self.0.swap(0, Ordering::SeqCst)
    }
}

#[async_trait::async_trait]
impl Middleware for CountAttempts {
    async fn handle(
        &self,
        req: reqwest::Request,
        extensions: &mut Extensions,
        next: Next<'_>,
    ) -> reqwest_middleware::Result<reqwest::Response> {
        self.0.fetch_add(1, Ordering::SeqCst);
        next.run(req, extensions).await
    }
}

/// What the caller got, in the words of RELIABILITY.md's fault matrix: the status (and a body
/// that failed), or the kind of the error.
pub async fn describe(result: reqwest_middleware::Result<reqwest::Response>) -> String {
    match result {
        Ok(res) => {
            let status = res.status().as_u16().to_string();
            match res.bytes().await {
                Ok(_) => status,
                Err(err) => format!(
                    "{status}, body: {}",
                    kind_name(backstop_reqwest::classify_reqwest(&err).kind())
                ),
            }
        }
        Err(err) => {
            let kind = match backstop_reqwest::classified(&err) {
                Some(ours) => ours.kind(),
                None => backstop_reqwest::classify(&err).kind(),
            };
            kind_name(kind)
        }
    }
}

fn kind_name(kind: Kind) -> String {
    match kind {
        Kind::Status(status) => format!("error {}", status.as_u16()),
        kind => kind.name().to_owned(),
    }
}

/// The rows of a markdown table between two markers in `path`, as cells.
pub fn table_rows(path: &str, begin: &str, end: &str) -> Vec<Vec<String>> {
    let text = std::fs::read_to_string(path).unwrap();
    let start = text.find(begin).expect("begin marker");
    let stop = text.find(end).expect("end marker");
    text[start + begin.len()..stop]
        .lines()
        .filter(|line| line.starts_with('|') && !line.starts_with("|---"))
        .skip(1)
        .map(|line| {
            line.trim_matches('|')
                .split('|')
                .map(|cell| cell.trim().to_owned())
                .collect()
        })
        .collect()
}
