"""The request pipeline: the stages a request body goes through, in order.

    parse & validate → [identity] → [policy] → [guardrails]
      → exact tier → shared tier → coalesce → semantic tier → route

A stage is a function of the request's `Exchange` (its context). It returns None to go
on, or a decision that ends the pipeline (an answer, or the routed request). A stage
that needs I/O is a generator: `result = yield Effect(...)` (see `effects`); the
servicer performs the effect and sends the result back. The bracketed slots are empty
in the product; `pipeline.<slot>` in the config puts stages there (`extensions`).
`order` lists the stages, `base` says what a stage is.
How to add one: docs/architecture.md.
"""
