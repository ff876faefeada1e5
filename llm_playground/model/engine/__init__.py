"""The serving engine: requests in, one batched forward per step, tokens and reports out.

What it does: admit and validate requests (`request_rules`), schedule each step within a token
budget with chunked prefill and preemption (`scheduler`), own the KV blocks with prefix caching
and copy-on-write (`block_manager`, driving `block_pool`, `sequence_tables` with its mirror
`table_rows`, and `prefix_index`), keep each sequence's tokens and text state
(`sequence`), hand the step to the model runner that keeps the batch's block tables on the
device and derives the rest there, runs the network (eagerly or as CUDA graphs) and samples
(`batch_builder`, `device_batch`, `cuda_graphs`, `sampler`), overlapping the next step's planning
with the device's work (`engine`, EngineConfig.overlap, `run_ahead`), apply a step's tokens and
stop rules (`step_apply`), fail only the requests of a step the runner raised in
(`step_faults`), evict blocks sliding attention patterns no longer need (`attention_patterns`,
`eviction`), run beam search as sequence groups (`beam_search`), offer call-and-wait wrappers
(`conveniences`: generate, beam_search), and publish plain-data reports kept current as things
change (`reports`, `cache_report`, `report_book`). Chat templates render here too
(`chat_template`).
What it does not do: read model files (model/weights), define the network (model/network), or
know anything about the UI: callers drive `Engine.step()` and read its reports.
"""
