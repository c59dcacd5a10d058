//! Binding and serving the API: TCP or a Unix socket, a connection limit and a
//! header-read timeout, graceful shutdown.

use std::path::PathBuf;
use std::sync::Arc;

use axum::Router;

use crate::config::ApiConfig;

/// How long connections may take and how many are served at once.
#[derive(Debug, Clone, Copy)]
pub struct ServeLimits {
    /// Time allowed for a request's headers once a connection waits for one.
    pub header_timeout: std::time::Duration,
    /// Connections served at once; further ones wait in the listen queue.
    pub max_connections: usize,
}

impl Default for ServeLimits {
    fn default() -> Self {
        ServeLimits::from(&ApiConfig::default())
    }
}

impl From<&ApiConfig> for ServeLimits {
    fn from(c: &ApiConfig) -> Self {
        ServeLimits {
            header_timeout: c.header_timeout.0,
            max_connections: c.max_connections.max(1),
        }
    }
}

/// Serves on "HOST:PORT" or "unix:/path" with the default limits until
/// `shutdown` resolves.
pub async fn serve(
    listen: &str,
    router: Router,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    serve_with(listen, router, ServeLimits::default(), shutdown).await
}

/// Serves on "HOST:PORT" or "unix:/path" until `shutdown` resolves, closing
/// connections that send no request headers in time and serving at most
/// `limits.max_connections` at once.
pub async fn serve_with(
    listen: &str,
    router: Router,
    limits: ServeLimits,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    bind(listen).await?.serve(router, limits, shutdown).await;
    Ok(())
}

/// A bound API listener: binding is separate from serving so that the daemon
/// knows at once whether the address is usable, with no wait.
pub enum Bound {
    /// A TCP listener.
    Tcp(tokio::net::TcpListener),
    /// A Unix socket listener and its path (removed when serving stops).
    #[cfg(unix)]
    Unix(tokio::net::UnixListener, PathBuf),
}

/// Binds "HOST:PORT" or "unix:/path"; errors name the address.
pub async fn bind(listen: &str) -> std::io::Result<Bound> {
    let annotate =
        |e: std::io::Error| std::io::Error::new(e.kind(), format!("API on {listen}: {e}"));
    if let Some(path) = listen.strip_prefix("unix:") {
        return bind_unix(std::path::Path::new(path))
            .await
            .map_err(annotate);
    }
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(annotate)?;
    tracing::info!(addr = %listener.local_addr()?, "API listening");
    Ok(Bound::Tcp(listener))
}

impl Bound {
    /// Serves until `shutdown` resolves.
    pub async fn serve(
        self,
        router: Router,
        limits: ServeLimits,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) {
        match self {
            Bound::Tcp(l) => serve_connections(l, router, limits, shutdown).await,
            #[cfg(unix)]
            Bound::Unix(l, path) => {
                serve_connections(l, router, limits, shutdown).await;
                let _ = std::fs::remove_file(path);
            }
        }
    }
}

/// The accept loop: one permit per connection, HTTP/1.1 with a header-read
/// timeout, graceful shutdown of every connection when `shutdown` resolves.
async fn serve_connections<L: axum::serve::Listener>(
    mut listener: L,
    router: Router,
    limits: ServeLimits,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) {
    let permits = Arc::new(tokio::sync::Semaphore::new(limits.max_connections));
    let connections = tokio_util::task::TaskTracker::new();
    let stop = tokio_util::sync::CancellationToken::new();
    tokio::pin!(shutdown);
    loop {
        // At the limit, wait for a connection to close before accepting another.
        let permit = tokio::select! {
            p = permits.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
            () = &mut shutdown => break,
        };
        let (io, _addr) = tokio::select! {
            c = listener.accept() => c,
            () = &mut shutdown => break,
        };
        if permits.available_permits() == 0 {
            tracing::warn!(
                max = limits.max_connections,
                "the API serves api.max_connections connections; new ones wait until one closes"
            );
        }
        let service = hyper_util::service::TowerToHyperService::new(router.clone());
        let stop = stop.clone();
        connections.spawn(async move {
            let _permit = permit;
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(limits.header_timeout);
            let conn = builder.serve_connection(hyper_util::rt::TokioIo::new(io), service);
            tokio::pin!(conn);
            let result = tokio::select! {
                r = conn.as_mut() => r,
                () = stop.cancelled() => {
                    conn.as_mut().graceful_shutdown();
                    conn.await
                }
            };
            if let Err(e) = result {
                tracing::debug!(error = %e, "API connection closed");
            }
        });
    }
    stop.cancel();
    connections.close();
    connections.wait().await;
}

#[cfg(unix)]
async fn bind_unix(path: &std::path::Path) -> std::io::Result<Bound> {
    use std::io::{Error, ErrorKind};
    use std::os::unix::fs::{FileTypeExt, PermissionsExt};

    if path.as_os_str().is_empty() {
        return Err(Error::new(
            ErrorKind::InvalidInput,
            "unix: needs a socket path",
        ));
    }
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_socket() => {
            if std::os::unix::net::UnixStream::connect(path).is_ok() {
                return Err(Error::new(
                    ErrorKind::AddrInUse,
                    "another process is listening on the socket",
                ));
            }
            // A stale socket left by a process that stopped.
            std::fs::remove_file(path)?;
        }
        Ok(_) => {
            return Err(Error::new(
                ErrorKind::AlreadyExists,
                "the path exists and is not a socket; refusing to replace it",
            ));
        }
        Err(e) if e.kind() == ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let listener = tokio::net::UnixListener::bind(path)?;
    // Owner and group only; the bearer token is still required.
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))?;
    tracing::info!(socket = %path.display(), "API listening");
    Ok(Bound::Unix(listener, path.to_path_buf()))
}

#[cfg(not(unix))]
async fn bind_unix(_path: &std::path::Path) -> std::io::Result<Bound> {
    Err(std::io::Error::new(
        std::io::ErrorKind::Unsupported,
        "unix sockets are not supported on this platform",
    ))
}
