//! A response stream fed by a task: the task ends when the stream is dropped.

use std::{
    pin::Pin,
    task::{Context, Poll},
};

use futures_util::Stream;
use tokio::{sync::mpsc, task::JoinHandle};

/// Items from `receiver`; dropping the stream aborts `task`.
pub(crate) struct TaskStream<T> {
    receiver: mpsc::Receiver<T>,
    task: JoinHandle<()>,
}

impl<T> TaskStream<T> {
    pub(crate) fn new(receiver: mpsc::Receiver<T>, task: JoinHandle<()>) -> Self {
        Self { receiver, task }
    }
}

impl<T> Stream for TaskStream<T> {
    type Item = T;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<T>> {
        self.receiver.poll_recv(cx)
    }
}

impl<T> Drop for TaskStream<T> {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Resolves once `closed` is (or was) set to true, or its sender is gone.
pub(crate) async fn closed(closed: &mut tokio::sync::watch::Receiver<bool>) {
    let _ = closed.wait_for(|closed| *closed).await;
}

/// Aborts the task when dropped.
pub(crate) struct AbortOnDrop<T>(pub(crate) JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}
