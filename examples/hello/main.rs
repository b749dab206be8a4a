//! The README's hello world: the greeter service, registered as `greeter`.

use micro::Service;
use tonic::{Request, Response, Status};

#[allow(missing_docs, unreachable_pub)] // generated code, private to this binary
mod pb {
    micro::include_proto!("helloworld.v1");
}
use pb::{
    HelloReply, HelloRequest,
    greeter_server::{Greeter, GreeterServer},
};

struct Hello;

#[tonic::async_trait]
impl Greeter for Hello {
    async fn say_hello(&self, req: Request<HelloRequest>) -> Result<Response<HelloReply>, Status> {
        let message = format!("Hello, {}!", req.into_inner().name);
        Ok(Response::new(HelloReply { message }))
    }
}

#[tokio::main]
async fn main() -> Result<(), micro::ServiceError> {
    micro::install(); // lets MICRO_REGISTRY name the engines compiled in (etcd://…)
    Service::builder("greeter")
        .version("1.0.0")
        .add_service(GreeterServer::new(Hello))
        .run()
        .await
}
