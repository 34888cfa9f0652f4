"""Generated protobuf modules for the project's own schemas (`make protos`; do not edit).

Sources are in `protos/`; the layout mirrors the proto package, so `edge_agent/v1/
cache.proto` becomes `edge_agent._proto.edge_agent.v1.cache_pb2`.
"""
