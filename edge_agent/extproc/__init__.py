"""The ext_proc side of the agent: the gRPC servicer (`servicer`), and per HTTP request
the downstream `exchange` (its request pipeline in `edge_agent.pipeline`) or, on a
failover chain, one `attempt` per try; `provider_call` is the provider side of either."""
