//! `micro call`: one call by reflection, its body from the command line or stdin.

use std::io::Read;

use futures_util::StreamExt;
use micro::api::dynamic::{self, DynamicCodec};
use prost_reflect::MethodDescriptor;

use super::{CallArgs, Context, MethodArgs, ToolError, outln, registered};

/// A method resolved by reflection, its requests parsed, and a ready channel to it.
pub(crate) struct Prepared {
    /// The method.
    pub(crate) method: MethodDescriptor,
    /// Its gRPC path.
    pub(crate) path: http::uri::PathAndQuery,
    /// The request messages (several for a client-streaming method).
    pub(crate) requests: Vec<prost_reflect::DynamicMessage>,
    /// A client on the service's channel, ready.
    pub(crate) grpc: tonic::client::Grpc<micro_core::Channel>,
}

impl Context {
    /// Reads the body, finds the method by reflection, parses the requests and waits for
    /// the channel to be ready.
    pub(crate) async fn prepare(&self, target: &MethodArgs) -> Result<Prepared, ToolError> {
        let body = read_body(target.body.as_deref(), target.data.as_deref())?;
        let records = self.records(&target.service).await?;
        let pool = self.pool(&target.service).await?;
        let method = dynamic::find_method(&pool, &target.method, &registered(&records))
            .map_err(ToolError::Usage)?;
        let requests =
            dynamic::parse_requests(&method.input(), &body, method.is_client_streaming())
                .map_err(ToolError::Usage)?;
        let path = format!("/{}/{}", method.parent_service().full_name(), method.name());
        let path = http::uri::PathAndQuery::try_from(path)
            .map_err(|err| ToolError::Usage(format!("method path: {err}")))?;
        let mut grpc = tonic::client::Grpc::new(self.client.channel(&target.service));
        grpc.ready()
            .await
            .map_err(|err| ToolError::NotFound(format!("service {}: {err}", target.service)))?;
        Ok(Prepared {
            method,
            path,
            requests,
            grpc,
        })
    }
}

/// `micro call`.
pub(crate) async fn call(args: CallArgs) -> Result<(), ToolError> {
    let context = Context::open(&args.client)?;
    let Prepared {
        method,
        path,
        requests,
        mut grpc,
    } = context.prepare(&args.target).await?;
    let codec = DynamicCodec::new(method.output());
    let mut request_stream = None;
    let mut single = None;
    if method.is_client_streaming() {
        request_stream = Some(tonic::Request::new(futures_util::stream::iter(requests)));
    } else {
        single = requests.into_iter().next().map(tonic::Request::new);
    }
    match (method.is_client_streaming(), method.is_server_streaming()) {
        (false, false) => {
            let request = single.ok_or_else(|| ToolError::Usage("no request".into()))?;
            let reply = grpc
                .unary(request, path, codec)
                .await
                .map_err(ToolError::Status)?;
            print_reply(reply.get_ref())
        }
        (false, true) => {
            let request = single.ok_or_else(|| ToolError::Usage("no request".into()))?;
            let replies = grpc
                .server_streaming(request, path, codec)
                .await
                .map_err(ToolError::Status)?
                .into_inner();
            print_replies(replies).await
        }
        (true, false) => {
            let request = request_stream.ok_or_else(|| ToolError::Usage("no request".into()))?;
            let reply = grpc
                .client_streaming(request, path, codec)
                .await
                .map_err(ToolError::Status)?;
            print_reply(reply.get_ref())
        }
        (true, true) => {
            let request = request_stream.ok_or_else(|| ToolError::Usage("no request".into()))?;
            let replies = grpc
                .streaming(request, path, codec)
                .await
                .map_err(ToolError::Status)?
                .into_inner();
            print_replies(replies).await
        }
    }
}

fn print_reply(reply: &prost_reflect::DynamicMessage) -> Result<(), ToolError> {
    outln!("{}", dynamic::to_json(reply).map_err(ToolError::Failed)?);
    Ok(())
}

async fn print_replies(
    mut replies: tonic::Streaming<prost_reflect::DynamicMessage>,
) -> Result<(), ToolError> {
    while let Some(reply) = replies.next().await {
        print_reply(&reply.map_err(ToolError::Status)?)?;
    }
    Ok(())
}

/// The request body: BODY, `-d JSON`, `-d @file`, `-d -` (stdin), or `{}`.
pub(crate) fn read_body(body: Option<&str>, data: Option<&str>) -> Result<String, ToolError> {
    match (body, data) {
        (Some(body), _) => Ok(body.to_owned()),
        (None, Some("-")) => {
            let mut text = String::new();
            std::io::stdin().read_to_string(&mut text).map_err(|err| {
                ToolError::Usage(format!("cannot read the request from stdin: {err}"))
            })?;
            Ok(text)
        }
        (None, Some(data)) => match data.strip_prefix('@') {
            Some(file) => std::fs::read_to_string(file).map_err(|err| {
                ToolError::Usage(format!("cannot read the request from {file}: {err}"))
            }),
            None => Ok(data.to_owned()),
        },
        (None, None) => Ok("{}".to_owned()),
    }
}
