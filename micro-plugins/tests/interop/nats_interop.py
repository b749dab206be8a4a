"""Interop check for micro's NATS wire format, using nats-py.

    nats_interop.py publish URL TOPIC COUNT     publish COUNT messages to micro topic TOPIC
    nats_interop.py subscribe URL TOPIC COUNT   print "ready", then one JSON line per message

Wire format (see micro_plugins::nats): subject "micro.<topic>", body as-is, micro message
headers are NATS headers one to one ("content-type", "micro-id").
"""

import asyncio
import json
import sys

import nats


def subject(topic: str) -> str:
    return "micro." + topic


async def publish(url: str, topic: str, count: int) -> None:
    nc = await nats.connect(url)
    for i in range(count):
        body = json.dumps({"n": i, "from": "python"}).encode()
        headers = {"content-type": "application/json", "micro-id": f"py-{i}"}
        await nc.publish(subject(topic), body, headers=headers)
    await nc.flush()
    await nc.close()


async def subscribe(url: str, topic: str, count: int) -> None:
    nc = await nats.connect(url)
    sub = await nc.subscribe(subject(topic))
    await nc.flush()  # PING/PONG: the server has the subscription
    print("ready", flush=True)
    for _ in range(count):
        msg = await sub.next_msg(timeout=10)
        print(
            json.dumps(
                {
                    "subject": msg.subject,
                    "headers": dict(msg.headers or {}),
                    "body": msg.data.decode(),
                }
            ),
            flush=True,
        )
    await nc.close()


def main() -> None:
    mode, url, topic, count = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    if mode == "publish":
        asyncio.run(publish(url, topic, count))
    elif mode == "subscribe":
        asyncio.run(subscribe(url, topic, count))
    else:
        sys.exit(f"unknown mode {mode!r}")


if __name__ == "__main__":
    main()
