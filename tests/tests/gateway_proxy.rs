//! The gateway is a correct reverse proxy: hop-by-hop headers removed both ways, forwarding
//! headers written (and a client's replaced unless the previous hop is trusted), paths
//! normalised before routing and matched at segment boundaries, upstream base paths and
//! `strip_prefix`, load-time rejections, short error answers with a reason code, a breaker that
//! counts gateway errors only, and routes mounted one by one in an axum `Router`. Everything on
//! loopback, counted at the upstream.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::serve_axum;
use std::net::SocketAddr;
use std::time::Duration;

use backstop::{Gateway, GatewayReason, REASON_HEADER};
use backstop_chaos::{ChaosServer, Fault, Script};
use bytes::Bytes;
use http::{HeaderMap, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::timeout;

async fn serve_gateway(gateway: Gateway) -> SocketAddr {
    serve_axum(axum::Router::new().fallback_service(gateway)).await
}

struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: String,
}

impl Answer {
    fn reason(&self) -> Option<&str> {
        self.headers
            .get(REASON_HEADER)
            .and_then(|v| v.to_str().ok())
    }
}

async fn send(addr: SocketAddr, method: &str, path: &str, headers: &[(&str, &str)]) -> Answer {
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let mut req = Request::builder()
        .method(method)
        .uri(format!("http://{addr}{path}"));
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    let req = req.body(Full::new(Bytes::new())).unwrap();
    let res = timeout(Duration::from_secs(10), client.request(req))
        .await
        .expect("answered in time")
        .expect("answered");
    let status = res.status();
    let headers = res.headers().clone();
    let body = res.into_body().collect().await.unwrap().to_bytes();
    Answer {
        status,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    }
}

async fn get(addr: SocketAddr, path: &str) -> Answer {
    send(addr, "GET", path, &[]).await
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).map(|v| v.to_str().unwrap())
}

/// An upstream whose every answer carries hop-by-hop headers: written by hand, since a proper
/// server would not send them.
async fn hop_by_hop_upstream() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let answer = "HTTP/1.1 200 OK\r\n\
                    Connection: X-Internal, close\r\n\
                    X-Internal: 10.1.2.3\r\n\
                    Keep-Alive: timeout=5\r\n\
                    Proxy-Authenticate: Basic realm=\"inner\"\r\n\
                    Trailer: X-Checksum\r\n\
                    Upgrade: h2c\r\n\
                    X-Kept: yes\r\n\
                    Content-Length: 3\r\n\r\nok\n";
                let _ = stream.write_all(answer.as_bytes()).await;
                let _ = stream.shutdown().await;
            });
        }
    });
    addr
}

#[tokio::test]
async fn hop_by_hop_headers_are_removed_and_forwarding_headers_replaced() {
    let upstream = ChaosServer::start().await.unwrap();
    let gateway = Gateway::from_toml(&format!(
        "[[route]]\nprefix = \"/\"\nupstream = \"http://{}\"\n",
        upstream.addr()
    ))
    .unwrap();
    let addr = serve_gateway(gateway).await;

    let res = send(
        addr,
        "GET",
        "/items",
        &[
            ("connection", "X-Secret-Hop"),
            ("x-secret-hop", "1"),
            ("keep-alive", "timeout=5"),
            ("proxy-connection", "keep-alive"),
            ("proxy-authorization", "Basic Z2F0ZXdheTpzZWNyZXQ="),
            ("te", "trailers"),
            ("trailer", "x-checksum"),
            ("x-forwarded-for", "6.6.6.6"),
            ("x-forwarded-proto", "https"),
            ("x-forwarded-host", "evil.invalid"),
            ("forwarded", "for=6.6.6.6"),
            ("request-timeout-ms", "999999"),
            ("grpc-timeout", "100S"),
            ("via", "1.1 corporate-proxy"),
            ("x-end-to-end", "kept"),
        ],
    )
    .await;
    assert_eq!(res.status, StatusCode::OK);
    assert_eq!(header(&res.headers, "via"), Some("1.1 backstop"));

    let sent = &upstream.deliveries()[0].headers;
    for name in [
        "connection",
        "x-secret-hop",
        "keep-alive",
        "proxy-connection",
        "proxy-authorization",
        "te",
        "trailer",
        "forwarded",
        "request-timeout-ms",
        "grpc-timeout",
    ] {
        assert!(!sent.contains_key(name), "{name} forwarded: {sent:?}");
    }
    assert_eq!(header(sent, "x-forwarded-for"), Some("127.0.0.1"));
    assert_eq!(header(sent, "x-forwarded-proto"), Some("http"));
    assert_eq!(
        header(sent, "x-forwarded-host"),
        Some(addr.to_string().as_str())
    );
    assert_eq!(
        header(sent, "via"),
        Some("1.1 corporate-proxy, 1.1 backstop")
    );
    assert_eq!(header(sent, "x-end-to-end"), Some("kept"));
    assert_eq!(
        header(sent, "host"),
        Some(upstream.addr().to_string().as_str())
    );
}

#[tokio::test]
async fn hop_by_hop_headers_of_the_upstream_do_not_reach_the_client() {
    let upstream = hop_by_hop_upstream().await;
    let gateway = Gateway::from_toml(&format!(
        "[[route]]\nprefix = \"/\"\nupstream = \"http://{upstream}\"\n"
    ))
    .unwrap();
    let addr = serve_gateway(gateway).await;
    let res = get(addr, "/").await;
    assert_eq!(res.status, StatusCode::OK);
    assert_eq!(res.body, "ok\n");
    for name in [
        "x-internal",
        "keep-alive",
        "proxy-authenticate",
        "trailer",
        "upgrade",
    ] {
        assert!(!res.headers.contains_key(name), "{name}: {:?}", res.headers);
    }
    // The connection header the client sees is its own hop's (the gateway's server), never
    // the upstream's list.
    assert!(
        res.headers
            .get_all("connection")
            .iter()
            .all(|v| !v.to_str().unwrap().contains("X-Internal")),
        "{:?}",
        res.headers
    );
    assert_eq!(header(&res.headers, "x-kept"), Some("yes"));
    assert_eq!(header(&res.headers, "via"), Some("1.1 backstop"));
}

#[tokio::test]
async fn a_trusted_previous_hop_is_appended_to_and_rfc7239_is_written_on_request() {
    let upstream = ChaosServer::start().await.unwrap();
    let table = format!(
        r#"
[[route]]
prefix = "/trusted"
upstream = "http://{up}"
trust_forwarded = true

[[route]]
prefix = "/rfc"
upstream = "http://{up}"
forwarded = "rfc7239"

[[route]]
prefix = "/trusted-rfc"
upstream = "http://{up}"
forwarded = "rfc7239"
trust_forwarded = true
"#,
        up = upstream.addr()
    );
    let addr = serve_gateway(Gateway::from_toml(&table).unwrap()).await;
    let client_headers = [
        ("x-forwarded-for", "203.0.113.7, 10.0.0.1"),
        ("x-forwarded-proto", "https"),
        ("x-forwarded-host", "shop.example"),
        ("forwarded", "for=203.0.113.7;proto=https"),
    ];
    for path in ["/trusted/a", "/rfc/a", "/trusted-rfc/a"] {
        assert_eq!(
            send(addr, "GET", path, &client_headers).await.status,
            StatusCode::OK
        );
    }
    let deliveries = upstream.deliveries();
    let by_path = |path: &str| {
        &deliveries
            .iter()
            .find(|d| d.path == path)
            .expect(path)
            .headers
    };

    let trusted = by_path("/trusted/a");
    assert_eq!(
        header(trusted, "x-forwarded-for"),
        Some("203.0.113.7, 10.0.0.1, 127.0.0.1")
    );
    assert_eq!(header(trusted, "x-forwarded-proto"), Some("https"));
    assert_eq!(header(trusted, "x-forwarded-host"), Some("shop.example"));

    let rfc = by_path("/rfc/a");
    let host = addr.to_string();
    assert_eq!(
        header(rfc, "forwarded"),
        Some(format!("for=127.0.0.1;proto=http;host=\"{host}\"").as_str())
    );
    for name in ["x-forwarded-for", "x-forwarded-proto", "x-forwarded-host"] {
        assert!(!rfc.contains_key(name), "{name}: {rfc:?}");
    }

    let trusted_rfc = by_path("/trusted-rfc/a");
    assert_eq!(
        header(trusted_rfc, "forwarded"),
        Some(
            format!("for=203.0.113.7;proto=https, for=127.0.0.1;proto=http;host=\"{host}\"")
                .as_str()
        )
    );
}

/// `TE: trailers` is kept on gRPC requests (gRPC over HTTP/2 requires it), and a client's
/// `grpc-timeout` is replaced by the route's own.
#[tokio::test]
async fn grpc_keeps_te_trailers_and_gets_the_routes_own_timeout() {
    let upstream = ChaosServer::start().await.unwrap();
    let table = format!(
        "[[route]]\nprefix = \"/\"\nupstream = \"http://{}\"\n[route.policy]\ndeadline = \"2s\"\n[route.policy.retry]\nmax_attempts = 1\n",
        upstream.addr()
    );
    let addr = serve_gateway(Gateway::from_toml(&table).unwrap()).await;
    send(
        addr,
        "POST",
        "/pkg.Service/Method",
        &[
            ("content-type", "application/grpc"),
            ("te", "trailers"),
            ("grpc-timeout", "100S"),
        ],
    )
    .await;
    let sent = &upstream.deliveries()[0].headers;
    assert_eq!(header(sent, "te"), Some("trailers"));
    let timeout = header(sent, "grpc-timeout").expect("the route's own grpc-timeout");
    assert_ne!(timeout, "100S", "the client's value was passed through");
}

#[tokio::test]
async fn paths_are_normalised_and_prefixes_match_at_segment_boundaries() {
    let catalog = ChaosServer::start().await.unwrap();
    let payments = ChaosServer::start().await.unwrap();
    let table = format!(
        r#"
[[route]]
prefix = "/catalog"
upstream = "http://{catalog}"

[[route]]
prefix = "/payments"
upstream = "http://{payments}"
"#,
        catalog = catalog.addr(),
        payments = payments.addr()
    );
    let addr = serve_gateway(Gateway::from_toml(&table).unwrap()).await;

    // Not under /catalog: a prefix matches at a segment boundary only.
    let res = get(addr, "/catalogue-admin").await;
    assert_eq!(res.status, StatusCode::NOT_FOUND);
    assert_eq!(res.reason(), Some("NR"));
    assert_eq!(res.body, "no route\n");
    assert_eq!(catalog.request_count(), 0);

    // Dot segments are resolved before routing: this is a payments request, under the
    // payments route, and forwarded without the `..`.
    assert_eq!(
        get(addr, "/catalog/../payments/charge").await.status,
        StatusCode::OK
    );
    assert_eq!(catalog.request_count(), 0);
    assert_eq!(payments.count("GET", "/payments/charge"), 1);

    // Escaped dot segments and slashes mean different things to different servers: refused.
    for path in [
        "/catalog/%2e%2e/payments/charge",
        "/catalog/%2E%2E/payments/charge",
        "/catalog/.%2e/payments/charge",
        "/catalog%2F..%2Fpayments/charge",
        "/catalog/x%2fy",
        "/catalog/..;/payments/charge",
    ] {
        let res = get(addr, path).await;
        assert_eq!(res.status, StatusCode::BAD_REQUEST, "{path}");
        assert_eq!(res.reason(), Some("DP"), "{path}");
    }
    assert_eq!(catalog.request_count(), 0);
    assert_eq!(payments.request_count(), 1);

    // Repeated slashes merged, escaped unreserved characters decoded, the query kept as sent.
    for (path, forwarded, query) in [
        (
            "//catalog//items?page=2&q=a%20b",
            "/catalog/items",
            Some("page=2&q=a%20b"),
        ),
        ("/c%61talog/items", "/catalog/items", None),
        ("/catalog", "/catalog", None),
        ("/catalog/", "/catalog/", None),
        ("/catalog/./x/.", "/catalog/x/", None),
    ] {
        catalog.reset_counts();
        assert_eq!(get(addr, path).await.status, StatusCode::OK, "{path}");
        let deliveries = catalog.deliveries();
        assert_eq!(deliveries.len(), 1, "{path}");
        assert_eq!(deliveries[0].path, forwarded, "{path}");
        assert_eq!(deliveries[0].query.as_deref(), query, "{path}");
    }
}

#[tokio::test]
async fn an_upstream_base_path_is_prefixed_and_a_route_may_strip_its_prefix() {
    let upstream = ChaosServer::start().await.unwrap();
    let table = format!(
        r#"
[[route]]
prefix = "/api"
upstream = "http://{up}/base/v2/"
strip_prefix = true

[[route]]
prefix = "/keep"
upstream = "http://{up}/base"

[[route]]
prefix = "/bare"
upstream = "http://{up}"
strip_prefix = true
"#,
        up = upstream.addr()
    );
    let addr = serve_gateway(Gateway::from_toml(&table).unwrap()).await;
    for (path, forwarded, query) in [
        ("/api/items?page=2", "/base/v2/items", Some("page=2")),
        ("/api", "/base/v2", None),
        ("/keep/x?y=1", "/base/keep/x", Some("y=1")),
        ("/bare", "/", None),
        ("/bare/z", "/z", None),
    ] {
        upstream.reset_counts();
        assert_eq!(get(addr, path).await.status, StatusCode::OK, "{path}");
        let deliveries = upstream.deliveries();
        assert_eq!(deliveries.len(), 1, "{path}");
        assert_eq!(deliveries[0].path, forwarded, "{path}");
        assert_eq!(deliveries[0].query.as_deref(), query, "{path}");
    }
}

#[test]
fn a_table_that_cannot_route_correctly_is_rejected_at_load_naming_the_route() {
    let cases = [
        (
            "[[route]]\nprefix = \"/x\"\nupstream = \"http://user:hunter2@127.0.0.1:1\"\n",
            "route /x.upstream",
            "credentials",
        ),
        (
            "[[route]]\nprefix = \"/x\"\nupstream = \"http://127.0.0.1:1\"\n\n[[route]]\nprefix = \"/x/\"\nupstream = \"http://127.0.0.1:2\"\n",
            "route /x/.prefix",
            "duplicates",
        ),
        (
            "[[route]]\nprefix = \"/x\"\nmethods = [\"GET\", \"POST\"]\nupstream = \"http://127.0.0.1:1\"\n\n[[route]]\nprefix = \"/x\"\nmethods = [\"post\"]\nupstream = \"http://127.0.0.1:2\"\n",
            "route /x.prefix",
            "overlapping methods",
        ),
        (
            "[[route]]\nprefix = \"/a/../b\"\nupstream = \"http://127.0.0.1:1\"\n",
            "route /a/../b.prefix",
            "normalised",
        ),
        (
            "[[route]]\nprefix = \"/a//b\"\nupstream = \"http://127.0.0.1:1\"\n",
            "route /a//b.prefix",
            "never",
        ),
        (
            "[[route]]\nprefix = \"/x\"\nupstream = \"http://127.0.0.1:1/base?k=v\"\n",
            "route /x.upstream",
            "query",
        ),
        (
            "[[route]]\nprefix = \"/x\"\nupstream = \"ftp://127.0.0.1:1\"\n",
            "route /x.upstream",
            "http",
        ),
        (
            "[[route]]\nprefix = \"/x\"\nupstream = \"http://127.0.0.1:1\"\nforwarded = \"yes\"\n",
            "route /x.forwarded",
            "",
        ),
        (
            "[[route]]\nprefix = \"/x\"\nupstream = \"http://127.0.0.1:1\"\nbreaker_counts = \"4xx\"\n",
            "route /x.breaker_counts",
            "",
        ),
    ];
    for (table, field, rule) in cases {
        let err = Gateway::from_toml(table).expect_err(table);
        assert_eq!(err.field(), field, "{err}");
        assert!(err.rule().contains(rule), "{err}");
        assert!(!err.to_string().contains("hunter2"), "{err}");
    }
    // The same prefix with different methods is two routes, not a duplicate.
    let split = "[[route]]\nprefix = \"/x\"\nmethods = [\"GET\"]\nupstream = \"http://127.0.0.1:1\"\n\n[[route]]\nprefix = \"/x\"\nmethods = [\"POST\"]\nupstream = \"http://127.0.0.1:2\"\n";
    assert!(Gateway::from_toml(split).is_ok());
}

#[tokio::test]
async fn error_answers_carry_a_reason_code_and_no_upstream_detail() {
    let closed = backstop_chaos::closed_port_addr().unwrap();
    let slow = ChaosServer::start().await.unwrap();
    slow.script("/", Script::always(Fault::StallHeaders { duration: None }));
    let resets = ChaosServer::start().await.unwrap();
    resets.script("/", Script::always(Fault::ResetAfterRead));
    let table = format!(
        r#"
[[route]]
prefix = "/closed"
upstream = "http://{closed}"
[route.policy.retry]
max_attempts = 1

[[route]]
prefix = "/slow"
upstream = "http://{slow}"
[route.policy]
deadline = "300ms"
[route.policy.retry]
max_attempts = 1

[[route]]
prefix = "/resets"
upstream = "http://{resets}"
[route.policy.retry]
max_attempts = 1
"#,
        slow = slow.addr(),
        resets = resets.addr()
    );
    let addr = serve_gateway(Gateway::from_toml(&table).unwrap()).await;
    for (path, status, reason) in [
        ("/closed/x", StatusCode::SERVICE_UNAVAILABLE, "UF"),
        ("/slow/x", StatusCode::GATEWAY_TIMEOUT, "UT"),
        ("/resets/x", StatusCode::BAD_GATEWAY, "UC"),
    ] {
        let res = get(addr, path).await;
        assert_eq!(res.status, status, "{path}: {}", res.body);
        assert_eq!(res.reason(), Some(reason), "{path}");
        assert_eq!(
            GatewayReason::from_code(reason).map(GatewayReason::status),
            Some(status)
        );
        // One short line, with no address, port or advice.
        assert_eq!(res.body.lines().count(), 1, "{path}: {}", res.body);
        for leak in [
            "127.0.0.1",
            &closed.port().to_string(),
            &slow.addr().port().to_string(),
            &resets.addr().port().to_string(),
            "why",
            "next",
        ] {
            assert!(!res.body.contains(leak), "{path}: {leak} in {:?}", res.body);
        }
    }
}

fn breaker_table(prefix: &str, upstream: SocketAddr, counts: Option<&str>) -> String {
    let counts = counts.map_or(String::new(), |c| format!("breaker_counts = \"{c}\"\n"));
    format!(
        r#"
[[route]]
prefix = "{prefix}"
upstream = "http://{upstream}"
{counts}[route.policy.retry]
max_attempts = 1
[route.policy.breaker]
consecutive_failures = 3
minimum_calls = 100
open_for = "30s"
max_open_for = "60s"
"#
    )
}

fn retry_after(res: &Answer) -> u64 {
    header(&res.headers, "retry-after")
        .expect("Retry-After on an open-breaker 503")
        .parse()
        .unwrap()
}

/// At the gateway a `500` is the upstream answering; `503`s and connect failures say it is
/// sick. Once open, the breaker's `503 UO` says when to come back.
#[tokio::test]
async fn a_routes_breaker_counts_gateway_errors_not_every_5xx() {
    let upstream = ChaosServer::start().await.unwrap();
    let five_xx = ChaosServer::start().await.unwrap();
    let closed = backstop_chaos::closed_port_addr().unwrap();
    let table = [
        breaker_table("/gw", upstream.addr(), None),
        breaker_table("/all", five_xx.addr(), Some("5xx")),
        breaker_table("/down", closed, None),
    ]
    .concat();
    let addr = serve_gateway(Gateway::from_toml(&table).unwrap()).await;

    // Ten 500s: relayed, every one delivered, the breaker stays closed.
    upstream.script("/gw", Script::always(Fault::status(500)));
    for _ in 0..10 {
        let res = get(addr, "/gw/x").await;
        assert_eq!(res.status, StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(res.reason(), None, "the upstream's own answer");
    }
    assert_eq!(upstream.request_count(), 10);

    // Three 503s open it; the fourth call is refused at the gateway.
    upstream.script("/gw", Script::always(Fault::status(503)));
    for _ in 0..3 {
        assert_eq!(
            get(addr, "/gw/x").await.status,
            StatusCode::SERVICE_UNAVAILABLE
        );
    }
    let res = get(addr, "/gw/x").await;
    assert_eq!(res.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(res.reason(), Some("UO"));
    let wait = retry_after(&res);
    assert!((1..=36).contains(&wait), "30 s ± 20 % jitter: {wait}");
    assert_eq!(upstream.request_count(), 13);

    // With breaker_counts = "5xx", 500s open it too.
    five_xx.script("/all", Script::always(Fault::status(500)));
    for _ in 0..3 {
        assert_eq!(
            get(addr, "/all/x").await.status,
            StatusCode::INTERNAL_SERVER_ERROR
        );
    }
    let res = get(addr, "/all/x").await;
    assert_eq!(res.reason(), Some("UO"));
    assert_eq!(five_xx.request_count(), 3);

    // Connect failures open it.
    for _ in 0..3 {
        assert_eq!(get(addr, "/down/x").await.reason(), Some("UF"));
    }
    let res = get(addr, "/down/x").await;
    assert_eq!(res.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(res.reason(), Some("UO"));
    assert!(retry_after(&res) >= 1);
}

/// Routes mounted one by one in an axum `Router`, one of them with a layer of its own.
#[tokio::test]
async fn routes_mount_one_by_one_in_an_axum_router_with_their_own_layers() {
    let catalog = ChaosServer::start().await.unwrap();
    let payments = ChaosServer::start().await.unwrap();
    let table = format!(
        "[[route]]\nprefix = \"/catalog\"\nupstream = \"http://{}\"\n\n[[route]]\nprefix = \"/payments\"\nupstream = \"http://{}\"\n",
        catalog.addr(),
        payments.addr()
    );
    let gateway = Gateway::from_toml(&table).unwrap();
    let catalog_route = tower::ServiceBuilder::new()
        .map_request(|mut req: Request<axum::body::Body>| {
            req.headers_mut()
                .insert("x-route", http::HeaderValue::from_static("catalog"));
            req
        })
        .service(gateway.route_service("/catalog").unwrap());
    let payments_route = gateway.route_service("/payments/").unwrap();
    assert_eq!(payments_route.prefix(), "/payments");
    assert!(gateway.route_service("/elsewhere").is_none());
    let app = axum::Router::new()
        .route_service("/catalog", catalog_route.clone())
        .route_service("/catalog/{*rest}", catalog_route)
        .route_service("/payments/{*rest}", payments_route);
    let addr = serve_axum(app).await;

    assert_eq!(
        get(addr, "/catalog/items?page=3").await.status,
        StatusCode::OK
    );
    assert_eq!(get(addr, "/payments/charge").await.status, StatusCode::OK);
    let delivered = &catalog.deliveries()[0];
    assert_eq!(delivered.path, "/catalog/items");
    assert_eq!(delivered.query.as_deref(), Some("page=3"));
    assert_eq!(header(&delivered.headers, "x-route"), Some("catalog"));
    assert_eq!(
        header(&delivered.headers, "x-forwarded-for"),
        Some("127.0.0.1")
    );
    assert!(!payments.deliveries()[0].headers.contains_key("x-route"));

    // The router matched the raw path; once normalised it is not the catalog's.
    let res = get(addr, "/catalog/../payments/charge").await;
    assert_eq!(res.status, StatusCode::BAD_REQUEST);
    assert_eq!(res.reason(), Some("DP"));
    assert_eq!(catalog.request_count(), 1);
    assert_eq!(payments.request_count(), 1);
}

/// Served another way (here called directly, as any tower server would), the client's address
/// comes from a bare `SocketAddr` extension; with none, `Forwarded` says `for=unknown`.
#[tokio::test]
async fn the_client_address_is_read_from_a_socket_addr_extension() {
    use tower::ServiceExt;

    let upstream = ChaosServer::start().await.unwrap();
    let table = format!(
        "[[route]]\nprefix = \"/x\"\nupstream = \"http://{up}\"\n\n[[route]]\nprefix = \"/r\"\nupstream = \"http://{up}\"\nforwarded = \"rfc7239\"\n",
        up = upstream.addr()
    );
    let gateway = Gateway::from_toml(&table).unwrap();
    let peer: SocketAddr = "192.0.2.9:4711".parse().unwrap();
    let mut req = Request::get("/x/a")
        .header("host", "shop.example")
        .body(Full::new(Bytes::new()))
        .unwrap();
    req.extensions_mut().insert(peer);
    let res = timeout(Duration::from_secs(10), gateway.clone().oneshot(req))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let req = Request::get("/r/a")
        .header("host", "shop.example")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let res = timeout(Duration::from_secs(10), gateway.oneshot(req))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);

    let deliveries = upstream.deliveries();
    let sent = &deliveries[0].headers;
    assert_eq!(header(sent, "x-forwarded-for"), Some("192.0.2.9"));
    assert_eq!(header(sent, "x-forwarded-host"), Some("shop.example"));
    let sent = &deliveries[1].headers;
    assert_eq!(
        header(sent, "forwarded"),
        Some("for=unknown;proto=http;host=shop.example")
    );
}
