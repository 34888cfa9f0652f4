"""Translation between the client's schema and the provider's, through the OpenAI chat
format (the pivot), one module per schema pair: `common` (what every pair shares),
`stream` (the stream machinery), `anthropic` and `anthropic_stream` (OpenAI chat ⇄
Anthropic Messages), `bedrock` (Converse), `gemini` and `gemini_schema`, `cohere` (v2
chat). Provider modules (`providers/`) keep endpoints, credentials and quirks.

Rule: what one side can express and the other cannot is refused with a 400 naming the
field, never dropped — a silently ignored `n`, `logprobs` or `cache_control` would change
what the client gets without telling it.
"""
