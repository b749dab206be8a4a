"""Trailing metadata a micro handler sends, read by a gRPC client micro did not write.

Usage: grpcio_spec.py ADDRESS (a greeter-fixture node)
Prints one `key value` line per check; exits non-zero on any failure. The messages are
encoded by hand (greeter.v1: HelloRequest{name=1}, StreamHellosRequest{name=1, count=2},
HelloReply{message=1}), so no generated code or reflection is involved.
"""

import sys

import grpc


def varint(n):
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def string_field(number, text):
    data = text.encode()
    return varint(number << 3 | 2) + varint(len(data)) + data


def reply_message(raw):
    # HelloReply: field 1, one length-delimited string (short: one-byte length).
    assert raw[0] == 0x0A, raw
    return raw[2 : 2 + raw[1]].decode()


def show(metadata):
    wanted = ("x-greeted", "x-greeted-bin", "x-sent")
    pairs = [(k, v) for k, v in metadata if k in wanted]
    return " ".join(f"{k}={v!r}" for k, v in sorted(pairs))


def main():
    channel = grpc.insecure_channel(sys.argv[1])
    identity = dict(request_serializer=None, response_deserializer=None)

    say_hello = channel.unary_unary("/greeter.v1.Greeter/SayHello", **identity)
    reply, call = say_hello.with_call(string_field(1, "trailers-py"), timeout=10)
    print("unary", call.code().name, reply_message(reply))
    print("unary-trailers", show(call.trailing_metadata()))

    reply, call = say_hello.with_call(string_field(1, "plain"), timeout=10)
    print("plain-trailers", show(call.trailing_metadata()) or "none")

    try:
        say_hello(string_field(1, "x" * (5 * 1024 * 1024)), timeout=10)
        print("oversized OK")
    except grpc.RpcError as err:
        limit = "limit of 4194304 bytes" in err.details()
        print("oversized", err.code().name, "names-limit" if limit else err.details())
    reply = say_hello(string_field(1, "after"), timeout=10)
    print("after", reply_message(reply))

    stream_hellos = channel.unary_stream("/greeter.v1.Greeter/StreamHellos", **identity)
    request = string_field(1, "trailers-stream") + varint(2 << 3) + varint(3)
    call = stream_hellos(request, timeout=10)
    replies = [reply_message(raw) for raw in call]
    print("stream", call.code().name, len(replies))
    print("stream-trailers", show(call.trailing_metadata()))


if __name__ == "__main__":
    main()
