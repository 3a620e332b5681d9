//! The HTTP probe: one `backstop::Client` call per run (one attempt unless `--retries`), read
//! back through its `CallInfo` and classified errors, plus the diagnostic detail the client does
//! not expose (the resolved addresses, per-address connects after a failed connect, TLS session
//! and certificate).
//!
//! The runs live here; the client setup in [`setup`](mod@setup), the report in [`report`], the
//! per-address connect diagnosis in [`connect`].

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use backstop::{CallInfo, CallInfoExt, Client, Error};
use http_body_util::BodyExt;

use crate::HttpArgs;

mod connect;
mod report;
mod setup;

pub(crate) use report::Report;
use report::{Headers, HttpReport, assemble, ms, stats};
pub(crate) use setup::Overrides;
use setup::{Plan, Resolved, build_client, setup};

/// What one run of the client gave.
struct Run {
    info: Option<CallInfo>,
    result: Result<HttpReport, Error>,
    total: Duration,
}

async fn run_once(client: &Client, plan: &Plan) -> Result<Run, String> {
    let req = plan.request()?;
    let started = Instant::now();
    let res = client.send(req).await;
    let ttfb = started.elapsed();
    let res = match res {
        Ok(res) => res,
        Err(err) => {
            return Ok(Run {
                info: err.call_info().cloned(),
                result: Err(err),
                total: started.elapsed(),
            });
        }
    };
    let info = res.call_info().cloned();
    let header = |name: &str| {
        res.headers()
            .get(name)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
    };
    let headers = Headers {
        server: header("server"),
        retry_after: header("retry-after"),
        content_type: header("content-type"),
        content_length: header("content-length"),
    };
    let status = res.status();
    let version = format!("{:?}", res.version());
    let body_started = Instant::now();
    let body = res.into_body().collect().await;
    let total = started.elapsed();
    let result = body.map(|body| HttpReport {
        version,
        status: status.as_u16(),
        reason: status.canonical_reason().unwrap_or("").to_owned(),
        headers,
        ttfb_ms: ms(info.as_ref().map_or(ttfb, |i| i.time_to_headers)),
        body_bytes: body.to_bytes().len() as u64,
        body_ms: ms(body_started.elapsed()),
    });
    Ok(Run {
        info,
        result,
        total,
    })
}

/// Runs the HTTP probe; `Err` is a usage error.
pub(crate) async fn run(args: HttpArgs) -> Result<u8, String> {
    let s = setup(&args)?;
    let resolved: Resolved = Arc::new(Mutex::new(None));
    let mut runs = Vec::with_capacity(args.count as usize);
    for _ in 0..args.count {
        // A fresh client per run: every run opens (and times) its own connection.
        let client = build_client(&args, &s, resolved.clone())?;
        runs.push(run_once(&client, &s.plan).await?);
    }
    let last_failed = runs.iter().rposition(|r| r.result.is_err());
    let shown = match last_failed {
        Some(i) => runs.swap_remove(i),
        None => runs.pop().ok_or("no run")?,
    };
    let mut report = assemble(&args, &s, &shown, resolved).await;
    if args.count > 1 {
        runs.push(shown);
        report.stats = Some(stats(&runs, args.count));
    }
    let color = crate::render::use_color();
    if args.common.json {
        let json = serde_json::to_string_pretty(&report).map_err(|e| e.to_string())?;
        println!("{json}");
    } else {
        print!("{}", crate::render::report(&report, color));
    }
    Ok(report.exit_code)
}
