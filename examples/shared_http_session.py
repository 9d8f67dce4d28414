"""One async HTTP session, created once on the loop and reused by many sync calls.

``lt.resource(factory)`` creates the session lazily, on the loop, the first time a call needs
it; every later call reuses it (and its kept-alive connections); ``lt.stop()`` closes it.
The server is a tiny local ``asyncio.start_server``, so this runs offline.

Run: python examples/shared_http_session.py
"""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor

import structlog

import loopthread

# loopthread reports its own lifecycle through structlog; show only its warnings here.
structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))

server_connections = 0


async def serve_http(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """A minimal HTTP/1.1 server: keep-alive, GET only, echoes the path."""
    global server_connections
    server_connections += 1
    try:
        while request := await reader.readuntil(b"\r\n\r\n"):
            path = request.split(b" ", 2)[1]
            body = b"you asked for " + path
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        pass  # the client closed the connection
    except asyncio.CancelledError:
        # lt.stop() cancels leftover tasks; Python 3.11's start_server would report a
        # cancelled connection handler as an error, so end quietly instead.
        pass
    finally:
        writer.close()


class Session:
    """A small HTTP client session with a pool of kept-alive connections (like aiohttp's)."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
        self.opened = 0

    async def get(self, path: str) -> str:
        """GET ``path``; reuse an idle connection if there is one."""
        if self.idle:
            reader, writer = self.idle.pop()
        else:
            reader, writer = await asyncio.open_connection(self.host, self.port)
            self.opened += 1
        writer.write(f"GET {path} HTTP/1.1\r\nHost: {self.host}\r\n\r\n".encode())
        head = await reader.readuntil(b"\r\n\r\n")
        length = int(head.split(b"Content-Length: ")[1].split(b"\r\n")[0])
        body = await reader.readexactly(length)
        self.idle.append((reader, writer))
        return body.decode()

    async def aclose(self) -> None:
        """Close every pooled connection (called by lt.stop())."""
        for _, writer in self.idle:
            writer.close()
        self.idle.clear()


def main() -> None:
    """Start the server, make 200 sync calls from 8 threads through one session."""
    with loopthread.LoopThread("http") as lt:
        server = lt.run(asyncio.start_server(serve_http, "127.0.0.1", 0))
        port = server.sockets[0].getsockname()[1]
        created = 0

        async def make_session() -> Session:
            nonlocal created
            created += 1
            return Session("127.0.0.1", port)

        session = lt.resource(make_session, name="http-session")

        async def fetch(path: str) -> str:
            return await (await session.get()).get(path)

        def handle_request(n: int) -> str:
            """What a sync view does: one blocking call into async code."""
            return lt.run(fetch(f"/items/{n}"), timeout=5)

        with ThreadPoolExecutor(8) as pool:
            bodies = list(pool.map(handle_request, range(200)))

        pooled = lt.run(session.get())
        print(bodies[0])
        print(bodies[-1])
        print(f"{len(bodies)} sync calls, {created} session created, ", end="")
        print(f"{pooled.opened} connections opened (server saw {server_connections})")
        print(f"loops created: {lt.stats().loops_created}")
        server.close()
    print(f"after stop(): session closed, {len(pooled.idle)} idle connections left")


if __name__ == "__main__":
    main()
