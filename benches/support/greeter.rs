//! The greeter both load benchmarks serve: SayHello answers at once, StreamHellos is empty.

#[allow(unreachable_pub, missing_docs)]
pub(crate) mod pb {
    micro::include_proto!("greeter.v1");
}

use pb::{HelloReply, HelloRequest, greeter_server::Greeter};

/// Answers `Hello, <name>!` with no work in between.
pub(crate) struct Hello;

#[tonic::async_trait]
impl Greeter for Hello {
    async fn say_hello(
        &self,
        request: tonic::Request<HelloRequest>,
    ) -> Result<tonic::Response<HelloReply>, tonic::Status> {
        Ok(tonic::Response::new(HelloReply {
            message: format!("Hello, {}!", request.into_inner().name),
        }))
    }

    type StreamHellosStream = tokio_stream::Empty<Result<HelloReply, tonic::Status>>;

    async fn stream_hellos(
        &self,
        _request: tonic::Request<pb::StreamHellosRequest>,
    ) -> Result<tonic::Response<Self::StreamHellosStream>, tonic::Status> {
        Ok(tonic::Response::new(tokio_stream::empty()))
    }
}
