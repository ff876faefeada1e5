"""Rules of a request's life that need no engine state: admission, stopping, outputs.

`check_prompt` says why a new request must be refused (empty prompt, ids outside the vocabulary,
too long for the context or the whole KV cache, sliding-pattern limits), or None.
`stop_reason` decides, after a token is appended, whether the sequence ends and why, in this
order: EOS / stop ids (END_OF_SEQUENCE), a stop string found by the sequence's `TextState`
(STOP_STRING, its held-back text is then not flushed), max_tokens (MAX_TOKENS), the context end
for dense patterns (CONTEXT_FULL). It feeds the token to the text state on the way (the text delta grows).
`take_output` turns what a sequence produced since the last report into one `RequestOutput` and
clears it; `collect_outputs` does that for every sequence with news and forgets finished requests.
This module does not free blocks or touch the scheduler: the engine's `_finish_sequence` does.
"""
from __future__ import annotations

import numbers

from llm_playground.model.engine.block_manager import BlockManager
from llm_playground.model.engine.outcomes import ErrorKind, FinishReason
from llm_playground.model.engine.reports import RequestOutput
from llm_playground.model.engine.sampling_params import SamplingParams
from llm_playground.model.engine.sequence import Request, Sequence, SeqStatus
from llm_playground.model.engine.attention_patterns import AttentionPattern


def prompt_list(prompt_ids) -> tuple[list, tuple[ErrorKind, str] | None]:
    """The prompt as a list, numpy and other integer types turned into int (bools are not ids);
    with (kind, reason) when it is no sequence of token ids at all (a str, a number, None)."""
    if isinstance(prompt_ids, (str, bytes)):
        return [], (ErrorKind.INVALID_REQUEST, f"the prompt must be a list of token ids, got "
                    f"{type(prompt_ids).__name__} (encode the text with the tokenizer first)")
    try:
        ids = list(prompt_ids)
    except TypeError:
        return [], (ErrorKind.INVALID_REQUEST, f"the prompt must be a list of token ids, got "
                    f"{type(prompt_ids).__name__}")
    if set(map(type, ids)) <= {int}:     # plain ints (the usual case): no call per id
        return ids, None
    return [int(t) if isinstance(t, numbers.Integral) and not isinstance(t, bool) else t
            for t in ids], None


def check_prompt(ids: list[int], params: SamplingParams, pattern: AttentionPattern, vocab_size: int,
                 max_model_len: int, bm: BlockManager) -> tuple[ErrorKind, str] | None:
    """(kind, one-line reason) why a request with prompt `ids` cannot run, or None."""
    invalid, unsupported = ErrorKind.INVALID_REQUEST, ErrorKind.UNSUPPORTED
    V = vocab_size
    if not ids:
        return invalid, "empty prompt: at least one token is needed"
    wrong_type = [t for t in ids if type(t) is not int] if set(map(type, ids)) - {int} else []
    if wrong_type:
        return invalid, (f"prompt token id {wrong_type[0]!r:.40} is not an integer "
                         f"({type(wrong_type[0]).__name__})")
    bad = [t for t in ids if not 0 <= t < V]
    if bad:
        return invalid, f"prompt token id {bad[0]!r} is outside the vocabulary (0..{V - 1})"
    if pattern.evicts:
        reach = pattern.spec.window + pattern.spec.sinks + 2 * bm.block_size
        if reach > max_model_len:
            return unsupported, (f"attention pattern {pattern} keeps up to {reach} positions in the cache, "
                    f"more than the context of {max_model_len}")
        if params.n > 1:
            return unsupported, "parallel sampling (n > 1) with a sliding attention pattern is not supported"
        return None
    if len(ids) >= max_model_len:
        return ErrorKind.CONTEXT_LENGTH_EXCEEDED, (f"prompt of {len(ids)} tokens does not fit the context of {max_model_len} "
                f"tokens (one more is needed to generate)")
    if bm.blocks_for(len(ids) + 1) > bm.num_blocks:
        return ErrorKind.KV_CACHE_TOO_SMALL, (f"prompt of {len(ids)} tokens needs more than the whole KV cache "
                f"({bm.num_blocks} blocks of {bm.block_size} tokens)")
    return None


def stop_reason(seq: Sequence, tok: int, eos_token_ids,
                max_model_len: int) -> tuple[FinishReason, bool] | None:
    """(finish reason, flush held-back text) if `tok` ends `seq`, else None."""
    p = seq.params
    if (not p.ignore_eos and tok in eos_token_ids) or tok in p.stop_token_ids:
        return FinishReason.END_OF_SEQUENCE, True
    text = seq.text
    if text.decoder is not None:     # (without one, push releases nothing and never stops)
        seq.delta = seq.delta + text.push(tok)
        if text.stopped:
            return FinishReason.STOP_STRING, False
    n_out = len(seq.output_ids)
    if n_out >= p.max_tokens:
        return FinishReason.MAX_TOKENS, True
    if not seq.pattern.evicts and len(seq.prompt_ids) + n_out >= max_model_len:
        return FinishReason.CONTEXT_FULL, True
    return None


def take_output(seq: Sequence) -> RequestOutput:
    """The tokens and text `seq` produced since its last output (then cleared)."""
    out = RequestOutput(request_id=seq.request_id, new_token_ids=seq.new_tokens,
                        text_delta=seq.delta, finished=seq.status is SeqStatus.FINISHED,
                        finish_reason=seq.finish_reason, error=seq.error,
                        error_kind=seq.error_kind,
                        sample_index=seq.sample_index,
                        choices=seq.new_choices if seq.params.logprobs is not None else None,
                        speculated=seq.new_spec if seq.new_spec else None,
                        spec_proposed=seq.new_spec_proposed, spec_accepted=seq.new_spec_accepted,
                        speculation_refused=seq.new_spec_refusal)
    seq.new_tokens, seq.delta, seq.just_finished = [], "", False
    seq.new_choices = []
    if seq.new_spec:
        seq.new_spec = []
    seq.new_spec_proposed = seq.new_spec_accepted = 0
    seq.new_spec_refusal = None
    return out


def collect_outputs(requests: dict[int, Request]) -> list[RequestOutput]:
    """Outputs of every sequence with new tokens or just finished; finished requests are removed
    from `requests`."""
    outs = []
    finished = SeqStatus.FINISHED
    for rid, req in list(requests.items()):
        done = True
        for seq in req.seqs:
            if seq.new_tokens or seq.just_finished:
                outs.append(take_output(seq))
            done = done and seq.status is finished
        if done:
            del requests[rid]
    return outs
