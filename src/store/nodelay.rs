//! Turns off Nagle's algorithm on the process's TCP connections to PostgreSQL.
//!
//! sqlx 0.9.0 stopped setting TCP_NODELAY (transact-rs/sqlx#4335). Without it, a statement
//! larger than one TCP segment — every batched insert here — waits for the server's delayed
//! ACK: about 40 ms per statement, which capped batched writes at ~4k messages/s on this
//! machine (15k/s over a Unix socket, where Nagle does not apply). sqlx hands out no
//! socket, so on each new connection we find the sockets peered with the database's port
//! and set the option on them. Remove once sqlx sets it again.

#[cfg(target_os = "linux")]
pub fn disable_nagle_towards(port: u16) {
    use std::os::fd::{BorrowedFd, RawFd};

    let Ok(entries) = std::fs::read_dir("/proc/self/fd") else {
        return;
    };
    for entry in entries.flatten() {
        let Some(fd) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<RawFd>().ok())
        else {
            continue;
        };
        let is_socket = std::fs::read_link(entry.path())
            .is_ok_and(|target| target.to_string_lossy().starts_with("socket:"));
        if !is_socket {
            continue;
        }
        // SAFETY: the descriptor is only borrowed for two socket-option calls. Had it been
        // closed and reused in between, the calls fail (EBADF/ENOTSOCK) or set TCP_NODELAY
        // on another connection to the same port, which is harmless.
        let fd = unsafe { BorrowedFd::borrow_raw(fd) };
        let socket = socket2::SockRef::from(&fd);
        let to_database = socket
            .peer_addr()
            .ok()
            .and_then(|addr| addr.as_socket())
            .is_some_and(|addr| addr.port() == port);
        if to_database {
            let _ = socket.set_tcp_nodelay(true);
        }
    }
}

#[cfg(not(target_os = "linux"))]
pub fn disable_nagle_towards(_port: u16) {}

/// The TCP port of a `postgres://` URL (5432 unless given).
pub fn postgres_port(url: &str) -> u16 {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let authority = rest.split(['/', '?']).next().unwrap_or_default();
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    match host_port.rsplit_once(':') {
        Some((host, port)) if !host.ends_with(']') || host_port.starts_with('[') => {
            port.parse().unwrap_or(5432)
        }
        _ => 5432,
    }
}

#[cfg(test)]
mod tests {
    use super::postgres_port;

    #[test]
    fn ports_from_urls() {
        assert_eq!(postgres_port("postgres://u@127.0.0.1:5433/db"), 5433);
        assert_eq!(postgres_port("postgres://u:p@db.example/db"), 5432);
        assert_eq!(postgres_port("postgresql://h:6000"), 6000);
        assert_eq!(
            postgres_port("postgres://u@[::1]:5434/db?sslmode=disable"),
            5434
        );
    }
}
