//! One client per endpoint, one endpoint in use at a time, failing over to the next.

use std::sync::atomic::{AtomicUsize, Ordering};

use etcd_client::{Client, ConnectOptions};

/// Clients for every endpoint and the index of the one in use.
pub(crate) struct Pool {
    clients: Vec<Client>,
    current: AtomicUsize,
}

impl Pool {
    /// A client per endpoint. etcd-client connects lazily, so this does not fail when a
    /// member is down.
    pub(crate) async fn connect(
        endpoints: &[String],
        options: &ConnectOptions,
    ) -> Result<Self, etcd_client::Error> {
        let mut clients = Vec::with_capacity(endpoints.len());
        for endpoint in endpoints {
            clients.push(Client::connect([endpoint], Some(options.clone())).await?);
        }
        if clients.is_empty() {
            return Err(etcd_client::Error::InvalidArgs("no endpoints".to_owned()));
        }
        Ok(Self {
            clients,
            current: AtomicUsize::new(0),
        })
    }

    /// How many endpoints there are (at least one).
    pub(crate) fn len(&self) -> usize {
        self.clients.len()
    }

    /// The endpoint in use: its index (for [`Pool::failed`]) and client.
    pub(crate) fn current(&self) -> (usize, Client) {
        let index = self.current.load(Ordering::Relaxed) % self.clients.len();
        (index, self.clients[index].clone())
    }

    /// The endpoint `index` failed: use the next one, unless someone moved on already.
    pub(crate) fn failed(&self, index: usize) {
        let next = (index + 1) % self.clients.len();
        let _ = self
            .current
            .compare_exchange(index, next, Ordering::Relaxed, Ordering::Relaxed);
    }
}
