"""Generation stage: class names (and items) in, candidate concept strings out.

prompts (prompt families as data) -> client (the OpenAI-compatible client with cache, retries, budgets) ->
parse (strict answer parsing). server runs the embedded llama.cpp model.
"""
