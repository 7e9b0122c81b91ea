//! Stop requests from outside: Ctrl-C (SIGINT) or SIGTERM, for every long-running command.

use tokio_util::sync::CancellationToken;

/// Resolves on the first Ctrl-C or SIGTERM.
pub async fn stop_requested() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    let term = async {
        match term.as_mut() {
            Some(t) => {
                t.recv().await;
            }
            None => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term => {}
    }
}

/// Cancels `cancel` on Ctrl-C or SIGTERM: transfers save their progress and stop.
pub async fn cancel_on_stop(cancel: CancellationToken) {
    stop_requested().await;
    cancel.cancel();
}
