"""A TCP proxy that delays every request by a fixed time, to model the first-byte latency of
a real object store (tens of milliseconds) in front of a loopback S3 server.

Usage: python3 latency_proxy.py LISTEN_PORT UPSTREAM_PORT DELAY_MS
"""
import asyncio
import sys


async def pipe(reader, writer, delay, turn):
    """Relays reader to writer. With a delay (the client's side), the first bytes of each new
    request wait: bytes that arrive after the server has answered (turn["answered"]) start a
    request. Later chunks of the same request (an upload's body) flow at once, so the delay is
    one round trip per request, not a bandwidth limit."""
    try:
        while data := await reader.read(1 << 16):
            if delay and turn["answered"]:
                turn["answered"] = False
                await asyncio.sleep(delay)
            elif not delay:
                turn["answered"] = True
            writer.write(data)
            await writer.drain()
    except ConnectionError:
        pass
    finally:
        writer.close()


async def main(listen, upstream, delay):
    async def handle(client_r, client_w):
        try:
            up_r, up_w = await asyncio.open_connection("127.0.0.1", upstream)
        except OSError:
            client_w.close()
            return
        # Requests (client to server) wait; responses flow at once.
        turn = {"answered": True}
        await asyncio.gather(pipe(client_r, up_w, delay, turn), pipe(up_r, client_w, 0, turn))

    server = await asyncio.start_server(handle, "127.0.0.1", listen)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]) / 1000))
