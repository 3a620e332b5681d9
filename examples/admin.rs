//! The examples' status page (`backstop::admin`) on an admin listener of its own.

use std::net::SocketAddr;

use backstop::admin::{Admin, Status};
use backstop::server::shutdown_signal;

/// Starts the status page on loopback only: port `--admin-port N`, else `BACKSTOP_ADMIN_PORT`,
/// else 9901 when serving and any free port for a demo. It stops with the process (or on
/// SIGTERM / Ctrl-C), and prints its address.
pub async fn start(
    status: Status,
    serving: bool,
) -> Result<SocketAddr, Box<dyn std::error::Error + Send + Sync>> {
    let args: Vec<String> = std::env::args().collect();
    let flag = args
        .iter()
        .position(|arg| arg == "--admin-port")
        .and_then(|at| args.get(at + 1).cloned());
    let port: u16 = match flag.or_else(|| std::env::var("BACKSTOP_ADMIN_PORT").ok()) {
        Some(port) => port.parse()?,
        None if serving => 9901,
        None => 0,
    };
    let admin = Admin::builder()
        .bind(SocketAddr::from(([127, 0, 0, 1], port)))
        .build()?
        .listen()
        .await?;
    let addr = admin.local_addr()?;
    tokio::spawn(admin.serve_with_shutdown(status, shutdown_signal()));
    println!("status page on http://{addr}/status (JSON: http://{addr}/status.json)");
    Ok(addr)
}
