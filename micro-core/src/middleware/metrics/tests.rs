use std::{convert::Infallible, sync::Arc};

use http::{HeaderValue, Request, Response};
use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};
use tower::{Layer, ServiceExt};

use super::*;
use crate::registry::Node;

type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;
/// A metric's name, sorted labels and value.
type Metric = (String, Vec<(String, String)>, f64);

/// Every metric of one snapshot: name, sorted labels, value (counters and gauges as f64,
/// histograms as their count of samples).
fn snapshot(snapshotter: &Snapshotter) -> Vec<Metric> {
    snapshotter
        .snapshot()
        .into_vec()
        .into_iter()
        .map(|(key, _, _, value)| {
            let key = key.key();
            let mut labels: Vec<_> = key
                .labels()
                .map(|l| (l.key().to_owned(), l.value().to_owned()))
                .collect();
            labels.sort_unstable();
            let value = match value {
                DebugValue::Counter(count) => count as f64,
                DebugValue::Gauge(gauge) => gauge.into_inner(),
                DebugValue::Histogram(samples) => samples.len() as f64,
            };
            (key.name().to_owned(), labels, value)
        })
        .collect()
}

fn find(metrics: &[Metric], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let mut labels: Vec<_> = labels
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    labels.sort_unstable();
    metrics
        .iter()
        .find(|(n, l, _)| n == name && *l == labels)
        .map(|(.., value)| *value)
}

fn trailers_only(code: &'static str) -> Response<tonic::body::Body> {
    let mut response = Response::new(tonic::body::Body::default());
    response
        .headers_mut()
        .insert("grpc-status", HeaderValue::from_static(code));
    response
}

fn request(path: &str) -> Request<tonic::body::Body> {
    Request::builder()
        .uri(path)
        .body(tonic::body::Body::default())
        .unwrap()
}

#[tokio::test]
async fn client_counts_by_node_and_code_and_errors_without_node() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let _guard = metrics::set_default_local_recorder(&recorder);

    let node = NodeInfo::new(Arc::new(Node {
        id: "n1".into(),
        address: "127.0.0.1:1".into(),
        metadata: Default::default(),
    }));
    let layer = MetricsLayer::client();
    let answered = layer.layer(tower::service_fn(move |_request| {
        let node = node.clone();
        async move {
            let mut response = trailers_only("14");
            response.extensions_mut().insert(node);
            Ok::<_, BoxError>(response)
        }
    }));
    answered.oneshot(request("/pkg.Svc/Call")).await.unwrap();
    let failing = layer.layer(tower::service_fn(|_request| async {
        Err::<Response<tonic::body::Body>, BoxError>(Box::new(tonic::Status::unavailable(
            "no node",
        )))
    }));
    assert!(failing.oneshot(request("/pkg.Svc/Call")).await.is_err());

    let metrics = snapshot(&snapshotter);
    let (service, method) = (("service", "pkg.Svc"), ("method", "Call"));
    let counted = |node, code| {
        find(
            &metrics,
            CLIENT_REQUESTS_TOTAL,
            &[service, method, ("node", node), ("code", code)],
        )
    };
    assert_eq!(counted("n1", "UNAVAILABLE"), Some(1.0));
    assert_eq!(counted("none", "UNAVAILABLE"), Some(1.0));
    let timed = |node| {
        find(
            &metrics,
            CLIENT_REQUEST_DURATION_SECONDS,
            &[service, method, ("node", node)],
        )
    };
    assert_eq!(timed("n1"), Some(1.0));
    assert_eq!(timed("none"), Some(1.0));
    assert_eq!(
        find(&metrics, CLIENT_REQUESTS_IN_FLIGHT, &[service, method]),
        Some(0.0)
    );
}

#[tokio::test]
async fn server_paths_are_bounded() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let _guard = metrics::set_default_local_recorder(&recorder);

    let layer = MetricsLayer::server();
    let service = layer.layer(tower::service_fn(|_request| async {
        Ok::<_, Infallible>(trailers_only("0"))
    }));
    for i in 0..MAX_METHODS + 10 {
        let path = format!("/pkg.Svc/M{i}");
        service.clone().oneshot(request(&path)).await.unwrap();
    }
    service.clone().oneshot(request("/not-grpc")).await.unwrap();
    let metrics = snapshot(&snapshotter);
    let other = [("service", "other"), ("method", "other")];
    assert_eq!(
        find(
            &metrics,
            SERVER_REQUESTS_TOTAL,
            &[other[0], other[1], ("code", "OK")]
        ),
        Some(11.0)
    );
    assert_eq!(
        find(
            &metrics,
            SERVER_REQUESTS_TOTAL,
            &[("service", "pkg.Svc"), ("method", "M0"), ("code", "OK")]
        ),
        Some(1.0)
    );
    let series = metrics
        .iter()
        .filter(|(name, ..)| name == SERVER_REQUESTS_TOTAL)
        .count();
    assert_eq!(series, MAX_METHODS + 1);
}
