//! [`Trailers`]: trailing metadata a handler sends with its reply.

use std::{
    fmt,
    sync::{Arc, Mutex},
};

use http::{HeaderMap, HeaderName};
use tonic::metadata::MetadataMap;

use crate::lock::lock;

/// Trailing metadata a handler sends after its reply, OK or not: what grpc-go's
/// `grpc.SetTrailer` does, which tonic does not offer (a tonic handler sets headers only;
/// trailers carry nothing but the status).
///
/// Attach it to the reply with [`Trailers::of`], then add to it any time until the reply
/// ends: a unary handler before it returns, a server-streaming handler also from inside
/// the stream it returned, until the stream's last item. Whatever the map holds when the
/// reply ends is sent in the HTTP/2 trailers, next to `grpc-status`. Clients read them as
/// usual: tonic merges them into a unary reply's metadata and returns them from
/// `Streaming::trailers`; grpcio returns them from `trailing_metadata()`.
///
/// A handler that fails returns a `Status` and no reply, so nothing to attach these to: the
/// status's own metadata (`Status::with_metadata`) is sent with it instead.
///
/// Names starting with `grpc-` are reserved for gRPC itself (`grpc-status`,
/// `grpc-message`, …) and are not sent, nor are HTTP/2's connection-specific headers; each
/// dropped name is logged at debug level. Binary values (names ending in `-bin`) are sent
/// base64-encoded as usual.
///
/// Cloning is cheap: clones share the map.
///
/// # Examples
///
/// A unary handler:
///
/// ```
/// use micro_core::context::Trailers;
/// use tonic::{Response, Status};
///
/// # struct HelloReply;
/// async fn say_hello() -> Result<Response<HelloReply>, Status> {
///     let mut reply = Response::new(HelloReply);
///     Trailers::of(&mut reply).with(|trailers| {
///         trailers.insert("x-cache", "miss".parse().expect("ASCII"));
///         trailers.insert_bin("x-cost-bin", tonic::metadata::MetadataValue::from_bytes(&[1, 2]));
///     });
///     Ok(reply)
/// }
/// ```
///
/// A server-streaming handler, counting what it sent:
///
/// ```
/// use futures_util::{Stream, StreamExt};
/// use micro_core::context::Trailers;
/// use tonic::{Response, Status};
///
/// fn list() -> Result<Response<impl Stream<Item = Result<u32, Status>>>, Status> {
///     let trailers = Trailers::new();
///     let counted = trailers.clone();
///     let items = futures_util::stream::iter(1..=3).map(move |item| {
///         counted.with(|map| map.insert("x-items", item.into()));
///         Ok(item)
///     });
///     let mut reply = Response::new(items);
///     trailers.attach(&mut reply);
///     Ok(reply)
/// }
/// ```
#[derive(Clone, Default)]
pub struct Trailers {
    map: Arc<Mutex<MetadataMap>>,
}

// === impl Trailers ===

impl Trailers {
    /// An empty set of trailers, not attached to any reply yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// The trailers of `response`: those already attached, or new ones attached now.
    pub fn of<T>(response: &mut tonic::Response<T>) -> Self {
        if let Some(trailers) = response.extensions().get::<Self>() {
            return trailers.clone();
        }
        let trailers = Self::new();
        response.extensions_mut().insert(trailers.clone());
        trailers
    }

    /// Attaches these trailers to `response`, replacing any attached before.
    pub fn attach<T>(&self, response: &mut tonic::Response<T>) {
        response.extensions_mut().insert(self.clone());
    }

    /// Runs `f` on the metadata to send, under a lock: keep it short and never wait in it.
    pub fn with<R>(&self, f: impl FnOnce(&mut MetadataMap) -> R) -> R {
        f(&mut lock(&self.map))
    }

    /// Adds the metadata to `trailers`, the reply's trailers being sent, leaving out the
    /// names gRPC or HTTP/2 reserve.
    pub(crate) fn add_to(&self, trailers: &mut HeaderMap) {
        let headers = lock(&self.map).clone().into_headers();
        let mut last = None;
        for (name, value) in headers {
            // The iterator names only the first of several values of one name.
            let name = match name {
                Some(name) => {
                    last = Some(name.clone());
                    name
                }
                None => match &last {
                    Some(name) => name.clone(),
                    None => continue,
                },
            };
            if reserved(&name) {
                tracing::debug!(%name, "reserved trailer name not sent");
                continue;
            }
            trailers.append(name, value);
        }
    }
}

impl fmt::Debug for Trailers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Trailers").field(&*lock(&self.map)).finish()
    }
}

/// gRPC's own names and the headers HTTP/2 forbids (RFC 9113 §8.2.2).
fn reserved(name: &HeaderName) -> bool {
    let name = name.as_str();
    name.starts_with("grpc-")
        || matches!(
            name,
            "connection"
                | "keep-alive"
                | "proxy-connection"
                | "transfer-encoding"
                | "upgrade"
                | "te"
                | "content-type"
        )
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use tonic::metadata::MetadataValue;

    use super::*;

    #[test]
    fn attached_trailers_are_shared_and_reserved_names_are_left_out() {
        let mut response = tonic::Response::new(());
        Trailers::of(&mut response).with(|map| {
            map.insert("x-a", "1".parse().unwrap());
            map.append("x-a", "2".parse().unwrap());
            map.insert("grpc-status", "0".parse().unwrap());
            map.insert("te", "trailers".parse().unwrap());
        });
        // The same map, reached again from the response.
        Trailers::of(&mut response)
            .with(|map| map.insert_bin("x-b-bin", MetadataValue::from_bytes(b"\x00\xff")));

        let mut sent = HeaderMap::new();
        sent.insert("grpc-status", "13".parse().unwrap());
        response
            .extensions()
            .get::<Trailers>()
            .unwrap()
            .add_to(&mut sent);
        let values: Vec<_> = sent.get_all("x-a").iter().collect();
        assert_eq!(values, ["1", "2"]);
        // Binary values go out base64-encoded (tonic leaves out the padding).
        assert_eq!(sent.get("x-b-bin").unwrap(), "AP8");
        // Never the handler's grpc-status, nor te.
        assert_eq!(sent.get("grpc-status").unwrap(), "13");
        assert!(sent.get("te").is_none());
    }
}
