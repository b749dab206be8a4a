"""A gRPC client micro did not write: Python's grpcio against a greeter-server node.

Usage: grpcio_client.py ADDRESS
Prints one `key value` line per check; exits non-zero on any failure.
"""

import sys

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc


def reflect(stub, **request):
    responses = list(
        stub.ServerReflectionInfo(
            iter([reflection_pb2.ServerReflectionRequest(**request)]), timeout=10
        )
    )
    assert len(responses) == 1, responses
    return responses[0]


def message_class(descriptor):
    # protobuf >= 4.22 has GetMessageClass; Debian's grpcio pairs with 4.21.
    if hasattr(message_factory, "GetMessageClass"):
        return message_factory.GetMessageClass(descriptor)
    return message_factory.MessageFactory().GetPrototype(descriptor)


def main():
    address = sys.argv[1]
    channel = grpc.insecure_channel(address)

    reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
    listed = reflect(reflection, list_services="")
    services = sorted(s.name for s in listed.list_services_response.service)
    print("services", ",".join(services))

    found = reflect(reflection, file_containing_symbol="greeter.v1.Greeter")
    pool = descriptor_pool.DescriptorPool()
    for raw in found.file_descriptor_response.file_descriptor_proto:
        pool.Add(descriptor_pb2.FileDescriptorProto.FromString(raw))
    request_type = message_class(pool.FindMessageTypeByName("greeter.v1.HelloRequest"))
    reply_type = message_class(pool.FindMessageTypeByName("greeter.v1.HelloReply"))
    say_hello = channel.unary_unary(
        "/greeter.v1.Greeter/SayHello",
        request_serializer=lambda m: m.SerializeToString(),
        response_deserializer=reply_type.FromString,
    )
    reply = say_hello(request_type(name="interop"), timeout=10)
    print("reply", reply.message)

    try:
        say_hello(request_type(name=""), timeout=10)
        print("empty-name OK")
    except grpc.RpcError as err:
        print("empty-name", err.code().name, err.details())

    health = health_pb2_grpc.HealthStub(channel)
    for service in ["", "greeter.v1.Greeter"]:
        status = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=10)
        name = health_pb2.HealthCheckResponse.ServingStatus.Name(status.status)
        print("health", service or "(server)", name)


if __name__ == "__main__":
    main()
