#!/usr/bin/env python3
"""A do-nothing ext_proc server on grpc.aio: the floor under the agent's CPU per request.

It answers every message the way the agent answers a cache miss, with none of the
agent's work: request headers "go on"; the request body sets the routing header (and
clears the route cache) so Envoy reaches the provider; the response headers ask for the
buffered response body, as the agent does to store an answer; the response body "goes
on". A request body containing MARKER is answered at once with a fixed JSON body, as
the agent answers a cache hit (two messages). `make bench` runs it behind the same
Envoy config as the gateway: the agent's cost above this server is the agent's own.

Usage: null_extproc.py PORT ROUTING_HEADER PROVIDER
"""

from __future__ import annotations

import sys

import grpc
from envoy.extensions.filters.http.ext_proc.v3.processing_mode_pb2 import ProcessingMode
from envoy.service.ext_proc.v3 import external_processor_pb2 as pb
from envoy.service.ext_proc.v3 import external_processor_pb2_grpc as pb_grpc

MARKER = b"Question hit-"  # the bench's cache-hit body (request_body("hit-..."))
ANSWER = b'{"id":"null","object":"chat.completion","choices":[]}'


class NullProcessor(pb_grpc.ExternalProcessorServicer):
    def __init__(self, routing_header: str, provider: str) -> None:
        self.header = routing_header
        self.provider = provider.encode()

    async def Process(self, request_iterator, context):  # type: ignore[no-untyped-def]
        while (request := await context.read()) is not grpc.aio.EOF:
            phase = request.WhichOneof("request")
            resp = pb.ProcessingResponse()
            if phase == "request_body":
                if MARKER in request.request_body.body:
                    imm = resp.immediate_response
                    imm.status.code = 200
                    imm.body = ANSWER
                    await context.write(resp)
                    return
                common = resp.request_body.response
                opt = common.header_mutation.set_headers.add()
                opt.header.key = self.header
                opt.header.raw_value = self.provider
                common.clear_route_cache = True
            elif phase == "response_headers":
                resp.response_headers.SetInParent()
                resp.mode_override.response_body_mode = ProcessingMode.BUFFERED
            else:
                getattr(resp, phase).SetInParent()
            await context.write(resp)
            if phase == "response_body":
                return


async def main(port: int, routing_header: str, provider: str) -> None:
    server = grpc.aio.server()
    pb_grpc.add_ExternalProcessorServicer_to_server(NullProcessor(routing_header, provider), server)
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    print("null ext_proc ready", flush=True)
    await server.wait_for_termination()


if __name__ == "__main__":
    import uvloop  # the agent's event loop (edge_agent/cli.py), for a like-for-like floor

    uvloop.run(main(int(sys.argv[1]), sys.argv[2], sys.argv[3]))
