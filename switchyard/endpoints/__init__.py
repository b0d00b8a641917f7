"""One module per API endpoint beyond chat and Responses: each fills in the pipeline's shape
(parse, quote for admission, the provider call, usage from the answer) and leaves the shared
steps (resolve, authorise, admit, call with fallback, settle, relay) to `Gateway`.

Each exports `serve(gateway, raw, principal, request_id) -> Outcome`, which the route hands to
`server.model_call`."""
