//! The socket options [`TcpConnector`](crate::TcpConnector) sets before connecting, and their
//! bounds.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use tokio::net::{TcpSocket, TcpStream};

use crate::config::{ConfigError, MAX_IDLE_TIMEOUT, MIN_TIMEOUT, check_duration};

/// The shortest TCP keep-alive idle time or probe interval accepted (1 s): the kernel counts
/// them in whole seconds.
pub const MIN_KEEPALIVE: Duration = Duration::from_secs(1);
/// The longest TCP keep-alive idle time or probe interval accepted (32,767 s, Linux's bound).
pub const MAX_KEEPALIVE: Duration = Duration::from_secs(32_767);
/// The most TCP keep-alive probes accepted (127, Linux's bound).
pub const MAX_KEEPALIVE_RETRIES: u32 = 127;

/// Socket options beyond `TCP_NODELAY`; all unset by default, when the connector connects as
/// `TcpStream::connect` does.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct SocketOptions {
    pub(crate) keepalive: Option<Duration>,
    pub(crate) keepalive_interval: Option<Duration>,
    pub(crate) keepalive_retries: Option<u32>,
    pub(crate) local_v4: Option<Ipv4Addr>,
    pub(crate) local_v6: Option<Ipv6Addr>,
    pub(crate) interface: Option<String>,
    pub(crate) tcp_user_timeout: Option<Duration>,
    pub(crate) send_buffer_size: Option<usize>,
    pub(crate) recv_buffer_size: Option<usize>,
}

impl SocketOptions {
    /// Checks every option set, naming the first out of range.
    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        if let Some(time) = self.keepalive {
            check_duration("keepalive", time, MIN_KEEPALIVE, MAX_KEEPALIVE)?;
        }
        if let Some(interval) = self.keepalive_interval {
            needs_keepalive(self.keepalive, "keepalive_interval")?;
            check_duration("keepalive_interval", interval, MIN_KEEPALIVE, MAX_KEEPALIVE)?;
        }
        if let Some(retries) = self.keepalive_retries {
            needs_keepalive(self.keepalive, "keepalive_retries")?;
            if !(1..=MAX_KEEPALIVE_RETRIES).contains(&retries) {
                return Err(ConfigError::new(
                    "keepalive_retries",
                    format!("must be between 1 and {MAX_KEEPALIVE_RETRIES}, got {retries}"),
                ));
            }
        }
        if let Some(timeout) = self.tcp_user_timeout {
            check_duration("tcp_user_timeout", timeout, MIN_TIMEOUT, MAX_IDLE_TIMEOUT)?;
        }
        if let Some(name) = &self.interface {
            // IFNAMSIZ is 16 bytes, the terminating NUL included.
            if name.is_empty() || name.len() > 15 || name.contains('\0') {
                return Err(ConfigError::new(
                    "interface",
                    format!("must be a device name of 1 to 15 bytes without NUL, got {name:?}"),
                ));
            }
        }
        for (field, size) in [
            ("send_buffer_size", self.send_buffer_size),
            ("recv_buffer_size", self.recv_buffer_size),
        ] {
            // setsockopt takes a C int; the kernel then clamps to its own maximum.
            let max = i32::MAX as usize;
            if let Some(size) = size.filter(|size| !(1..=max).contains(size)) {
                return Err(ConfigError::new(
                    field,
                    format!("must be between 1 and {max} bytes, got {size}"),
                ));
            }
        }
        Ok(())
    }

    /// Connects to `addr` with these options set on the socket first.
    pub(crate) async fn connect(&self, addr: SocketAddr) -> io::Result<TcpStream> {
        let socket = match addr {
            SocketAddr::V4(_) => TcpSocket::new_v4()?,
            SocketAddr::V6(_) => TcpSocket::new_v6()?,
        };
        self.apply(&socket, addr)?;
        socket.connect(addr).await
    }

    fn apply(&self, socket: &TcpSocket, addr: SocketAddr) -> io::Result<()> {
        let sock = socket2::SockRef::from(socket);
        if let Some(time) = self.keepalive {
            let keepalive = socket2::TcpKeepalive::new().with_time(time);
            #[cfg(any(
                target_os = "linux",
                target_os = "android",
                target_os = "freebsd",
                target_os = "netbsd",
                target_vendor = "apple",
                windows,
            ))]
            let keepalive = {
                let mut keepalive = keepalive;
                if let Some(interval) = self.keepalive_interval {
                    keepalive = keepalive.with_interval(interval);
                }
                if let Some(retries) = self.keepalive_retries {
                    keepalive = keepalive.with_retries(retries);
                }
                keepalive
            };
            sock.set_tcp_keepalive(&keepalive)?;
        }
        #[cfg(target_os = "linux")]
        if let Some(timeout) = self.tcp_user_timeout {
            sock.set_tcp_user_timeout(Some(timeout))?;
        }
        #[cfg(target_os = "linux")]
        if let Some(interface) = &self.interface {
            sock.bind_device(Some(interface.as_bytes()))?;
        }
        if let Some(size) = self.send_buffer_size {
            sock.set_send_buffer_size(size)?;
        }
        if let Some(size) = self.recv_buffer_size {
            sock.set_recv_buffer_size(size)?;
        }
        // Only an address of the destination's family can be bound; the other family connects
        // from wherever the system routes it, as hyper-util's `HttpConnector` does.
        let local = match addr {
            SocketAddr::V4(_) => self.local_v4.map(IpAddr::V4),
            SocketAddr::V6(_) => self.local_v6.map(IpAddr::V6),
        };
        if let Some(ip) = local {
            socket.bind(SocketAddr::new(ip, 0))?;
        }
        Ok(())
    }
}

fn needs_keepalive(time: Option<Duration>, field: &'static str) -> Result<(), ConfigError> {
    match time {
        Some(_) => Ok(()),
        None => Err(ConfigError::new(
            field,
            "applies to TCP keep-alive, which is off: set `keepalive` too",
        )),
    }
}
