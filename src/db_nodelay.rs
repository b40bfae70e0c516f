//! `TCP_NODELAY` on the PostgreSQL connections.
//!
//! sqlx 0.9.0 opens its TCP connections without `TCP_NODELAY`, a regression upstream
//! (transact-rs/sqlx#4335, fixed after that release). A message that does not fit in
//! one TCP segment (a statement carrying many rows: above 64 KiB on loopback, above
//! about 1.4 KiB across a network) then holds back its last, partial segment until the
//! server acknowledges the ones before, and the server delays that acknowledgement:
//! 40 ms on Linux, on every such statement. A placement's held writes are one such
//! statement, sent while the market is locked. Until sqlx sets the option again, every
//! new database connection sets it on this process's sockets connected to the
//! database's port.

/// Sets `TCP_NODELAY` on every TCP socket of this process whose peer listens on
/// `port`, and returns how many needed it.
#[cfg(target_os = "linux")]
pub fn set_towards(port: u16) -> usize {
    use rustix::process::{getpid, pidfd_getfd, pidfd_open, PidfdFlags, PidfdGetfdFlags};

    let Ok(entries) = std::fs::read_dir("/proc/self/fd") else {
        return 0;
    };
    // Each socket is reached through a duplicate of its descriptor (`pidfd_getfd` on
    // this process), which shares the socket and closes only itself when dropped.
    let Ok(this_process) = pidfd_open(getpid(), PidfdFlags::empty()) else {
        return 0;
    };
    let mut changed = 0;
    for entry in entries.flatten() {
        let Some(fd) = entry.file_name().to_str().and_then(|n| n.parse().ok()) else {
            continue;
        };
        let is_socket = std::fs::read_link(entry.path())
            .is_ok_and(|target| target.to_string_lossy().starts_with("socket:"));
        if !is_socket {
            continue;
        }
        let Ok(duplicate) = pidfd_getfd(&this_process, fd, PidfdGetfdFlags::empty()) else {
            continue;
        };
        let socket = socket2::SockRef::from(&duplicate);
        let towards_port = socket
            .peer_addr()
            .ok()
            .and_then(|peer| peer.as_socket())
            .is_some_and(|peer| peer.port() == port);
        if towards_port
            && socket.tcp_nodelay().is_ok_and(|on| !on)
            && socket.set_tcp_nodelay(true).is_ok()
        {
            changed += 1;
        }
    }
    changed
}

/// Elsewhere the sockets are left as sqlx opens them.
#[cfg(not(target_os = "linux"))]
pub fn set_towards(_port: u16) -> usize {
    0
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    #[test]
    fn sockets_towards_the_port_get_nodelay_and_others_do_not() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("listen");
        let other = std::net::TcpListener::bind("127.0.0.1:0").expect("listen");
        let port = listener.local_addr().expect("address").port();
        let to_db =
            std::net::TcpStream::connect(listener.local_addr().expect("address")).expect("connect");
        let elsewhere =
            std::net::TcpStream::connect(other.local_addr().expect("address")).expect("connect");
        assert!(!to_db.nodelay().expect("read option"));
        assert!(super::set_towards(port) >= 1);
        assert!(to_db.nodelay().expect("read option"));
        assert!(!elsewhere.nodelay().expect("read option"));
        // Already set: nothing left to change.
        assert_eq!(super::set_towards(port), 0);
    }
}
