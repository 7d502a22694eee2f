//! Task ownership. Every task the daemon spawns is owned by something that is dropped
//! or joined at shutdown: a task that only its own channel keeps alive is how a daemon
//! ends up logging "stopping" and never exiting.

use std::future::Future;

/// A spawned task that is aborted when this handle is dropped.
#[derive(Debug)]
pub struct OwnedTask(tokio::task::JoinHandle<()>);

impl OwnedTask {
    /// Spawns `task` on the current runtime, owned by the returned handle.
    pub fn spawn(task: impl Future<Output = ()> + Send + 'static) -> Self {
        Self(tokio::spawn(task))
    }
}

impl Drop for OwnedTask {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Joins `thread` for at most `limit`; `false` if it was still running then (it is
/// left behind: the process exits without it).
pub async fn join_thread(thread: std::thread::JoinHandle<()>, limit: std::time::Duration) -> bool {
    let joined = tokio::task::spawn_blocking(move || thread.join().is_ok());
    matches!(tokio::time::timeout(limit, joined).await, Ok(Ok(true)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn dropping_an_owned_task_ends_it_and_what_it_holds() {
        let (tx, mut rx) = tokio::sync::mpsc::channel::<()>(1);
        let task = OwnedTask::spawn(async move {
            let _held = tx;
            std::future::pending::<()>().await;
        });
        drop(task);
        // The sender the task held is dropped with it, so the channel ends.
        assert!(rx.recv().await.is_none());
    }

    #[tokio::test]
    async fn a_thread_that_never_ends_is_left_behind_after_the_limit() {
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let stuck = std::thread::spawn(move || {
            let _ = rx.recv();
        });
        assert!(!join_thread(stuck, Duration::from_millis(50)).await);
        drop(tx);
        let done = std::thread::spawn(|| {});
        assert!(join_thread(done, Duration::from_secs(30)).await);
    }
}
