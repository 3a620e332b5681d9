//! The gateway routes by prefix and applies each route's policy (counted at the upstreams); an
//! invalid route table fails at start-up naming the route and the field; the server stack sheds,
//! survives panics and classifies.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use backstop::server::{ServeConfig, Server};
use backstop::{Gateway, ServerStack};
use backstop_chaos::{ChaosServer, Fault, Script};
use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tokio::sync::{Semaphore, oneshot};
use tokio::time::timeout;

const TABLE: &str = r#"
[[route]]
prefix = "/payments"
methods = ["POST"]
upstream = "http://${PAYMENTS}"
[route.policy]
deadline = "2s"
attempt_timeout = "1s"
[route.policy.retry]
max_attempts = 1

[[route]]
prefix = "/catalog"
upstream = "http://${CATALOG}"
[route.policy]
deadline = "5s"
attempt_timeout = "1s"
[route.policy.retry]
max_attempts = 3
base_delay = "5ms"
max_delay = "20ms"
"#;

async fn serve<S, B>(app: S) -> (std::net::SocketAddr, oneshot::Sender<()>)
where
    S: tower::Service<Request<backstop::server::IncomingBody>, Response = Response<B>>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    S::Error: Into<backstop::server::BoxError>,
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<backstop::server::BoxError>,
{
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(
        Server::new(listener, ServeConfig::default()).serve_with_shutdown(app, async {
            let _ = stopped.await;
        }),
    );
    (addr, stop)
}

async fn call(addr: std::net::SocketAddr, method: &str, path: &str) -> (StatusCode, Bytes) {
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let req = Request::builder()
        .method(method)
        .uri(format!("http://{addr}{path}"))
        .body(Full::new(Bytes::from_static(b"{}")))
        .unwrap();
    let res = timeout(Duration::from_secs(10), client.request(req))
        .await
        .unwrap()
        .unwrap();
    let status = res.status();
    (status, res.into_body().collect().await.unwrap().to_bytes())
}

#[tokio::test]
async fn the_gateway_routes_by_prefix_and_applies_each_routes_policy() {
    let payments = ChaosServer::start().await.unwrap();
    payments.script("/payments", Script::fail_times(2, Fault::status(503)));
    let catalog = ChaosServer::start().await.unwrap();
    catalog.script("/catalog", Script::fail_times(2, Fault::status(503)));
    let table = TABLE
        .replace("${PAYMENTS}", &payments.addr().to_string())
        .replace("${CATALOG}", &catalog.addr().to_string());
    let gateway = Gateway::from_toml(&table).unwrap();
    let (addr, _stop) = serve(gateway).await;

    // /payments: no retries — the upstream's 503 comes straight back, delivered once.
    let (status, _) = call(addr, "POST", "/payments/charge").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(payments.count("POST", "/payments/charge"), 1);
    assert_eq!(catalog.request_count(), 0);

    // /catalog: three attempts — two 503s, then the answer.
    let (status, body) = call(addr, "GET", "/catalog/items?page=2").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(&body[..], b"ok\n");
    assert_eq!(catalog.count("GET", "/catalog/items"), 3);
    assert_eq!(catalog.deliveries()[0].query.as_deref(), Some("page=2"));

    // A method the route does not serve, and a path no route serves.
    assert_eq!(
        call(addr, "GET", "/payments/charge").await.0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        call(addr, "GET", "/elsewhere").await.0,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn an_unreachable_upstream_is_a_503_with_a_reason_code() {
    let closed = backstop_chaos::closed_port_addr().unwrap();
    let table = format!(
        "[[route]]\nprefix = \"/\"\nupstream = \"http://{closed}\"\n[route.policy.retry]\nmax_attempts = 1\n"
    );
    let (addr, _stop) = serve(Gateway::from_toml(&table).unwrap()).await;
    let (status, body) = call(addr, "GET", "/x").await;
    // Envoy's `UF`: the upstream could not be connected to. The body is one short line; the
    // classified error (refused, and where) goes to the log, not to the client.
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    let text = String::from_utf8_lossy(&body);
    assert_eq!(text, "upstream unavailable\n");
    assert!(!text.contains(&closed.to_string()), "{text}");
}

#[test]
fn an_invalid_route_table_fails_naming_the_route_and_field() {
    let cases = [
        (
            "[[route]]\nprefix = \"/payments\"\nupstream = \"http://127.0.0.1:1\"\nretries = 3\n",
            "route /payments.retries",
            "unknown field",
        ),
        (
            "[[route]]\nprefix = \"/payments\"\nupstream = \"http://127.0.0.1:1\"\n[route.policy]\ndeadline = \"-5s\"\n",
            "route /payments.policy.deadline",
            "",
        ),
        (
            "[[route]]\nprefix = \"/catalog\"\nupstream = \"http://127.0.0.1:1\"\n[route.policy]\ndeadline = \"1s\"\nattempt_timeout = \"5s\"\n",
            "route /catalog.attempt_timeout",
            "must not exceed deadline",
        ),
        (
            "[[route]]\nprefix = \"catalog\"\nupstream = \"http://127.0.0.1:1\"\n",
            "route catalog.prefix",
            "must start with '/'",
        ),
        (
            "[[route]]\nprefix = \"/x\"\nupstream = \"not a url\"\n",
            "route /x.upstream",
            "",
        ),
    ];
    for (table, field, rule) in cases {
        let err = Gateway::from_toml(table).expect_err(table);
        assert_eq!(err.field(), field, "{err}");
        assert!(err.rule().contains(rule), "{err}");
        assert!(err.to_string().contains(field));
    }
}

#[tokio::test]
async fn the_server_stack_sheds_survives_panics_and_classifies() {
    let gate = Arc::new(Semaphore::new(0));
    let stack = ServerStack::builder().max_in_flight(4).build().unwrap();
    let counts = stack.counts();
    let app = axum::Router::new()
        .route(
            "/slow",
            axum::routing::get({
                let gate = Arc::clone(&gate);
                move || {
                    let gate = Arc::clone(&gate);
                    async move {
                        let _permit = gate.acquire().await;
                        "slow\n"
                    }
                }
            }),
        )
        .route(
            "/panic",
            axum::routing::get(|| async {
                if true {
                    panic!("bug");
                }
                ""
            }),
        )
        .route("/", axum::routing::get(|| async { "ok\n" }))
        .layer(stack.clone());
    let (addr, _stop) = serve(app).await;

    let slow: Vec<_> = (0..4)
        .map(|_| tokio::spawn(call(addr, "GET", "/slow")))
        .collect();
    timeout(Duration::from_secs(10), async {
        while stack.in_flight() < 4 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .unwrap();
    let beyond: Vec<_> = (0..200)
        .map(|_| tokio::spawn(call(addr, "GET", "/slow")))
        .collect();
    for task in beyond {
        assert_eq!(task.await.unwrap().0, StatusCode::SERVICE_UNAVAILABLE);
    }
    gate.add_permits(4);
    for task in slow {
        assert_eq!(task.await.unwrap().0, StatusCode::OK);
    }
    assert_eq!(
        call(addr, "GET", "/panic").await.0,
        StatusCode::INTERNAL_SERVER_ERROR
    );
    assert_eq!(call(addr, "GET", "/").await.0, StatusCode::OK);
    assert_eq!(counts.shed(), 200);
    assert_eq!(counts.success(), 5);
    assert_eq!(counts.server_errors(), 1);
}

#[tokio::test]
async fn a_handler_past_the_callers_deadline_is_cancelled_with_504() {
    let stack = ServerStack::builder().build().unwrap();
    let app = tower::ServiceBuilder::new()
        .layer(stack)
        .service(tower::service_fn(
            |_req: Request<backstop::server::IncomingBody>| async {
                tokio::time::sleep(Duration::from_secs(30)).await;
                Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"late\n"))))
            },
        ));
    let (addr, _stop) = serve(app).await;
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let req = Request::get(format!("http://{addr}/"))
        .header("request-timeout-ms", "200")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let started = tokio::time::Instant::now();
    let res = timeout(Duration::from_secs(10), client.request(req))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(res.status(), StatusCode::GATEWAY_TIMEOUT);
    assert!(started.elapsed() < Duration::from_secs(2));
}

/// The deadline reaches an upstream as `request-timeout-ms` only on the routes that opt in.
#[tokio::test]
async fn deadline_propagation_is_chosen_per_route() {
    let internal = ChaosServer::start().await.unwrap();
    let partner = ChaosServer::start().await.unwrap();
    let table = format!(
        r#"
[[route]]
prefix = "/internal"
upstream = "http://{internal}"
[route.policy]
deadline = "2s"
[route.policy.propagation]
http = true

[[route]]
prefix = "/partner"
upstream = "http://{partner}"
[route.policy]
deadline = "2s"
"#,
        internal = internal.addr(),
        partner = partner.addr(),
    );
    let (addr, _stop) = serve(Gateway::from_toml(&table).unwrap()).await;
    assert_eq!(call(addr, "GET", "/internal/a").await.0, StatusCode::OK);
    assert_eq!(call(addr, "GET", "/partner/a").await.0, StatusCode::OK);

    let sent = &internal.deliveries()[0].headers;
    let ms: u64 = sent["request-timeout-ms"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(ms > 1_000 && ms <= 2_000, "the route's 2 s deadline: {ms}");
    let sent = &partner.deliveries()[0].headers;
    assert!(!sent.contains_key("request-timeout-ms"), "{sent:?}");
    // Served by backstop's own `Server`, the gateway knows the client's address.
    assert_eq!(sent["x-forwarded-for"], "127.0.0.1");
}
