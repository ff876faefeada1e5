"""`playground` command line: the Textual app (no subcommand), `generate` and `chat --plain`.

- `playground [--model PATH] ...` starts the full-screen app (playground/app.py, imported lazily
  so the line tools never load Textual).
- `playground generate --prompt TEXT [--chat] [--json] ...` runs one completion on the engine,
  streaming text to stdout; `--json` prints one JSON object instead (prompt ids, generated ids,
  text, finish reason, timings).
- `playground chat --plain`: a line-based multi-turn chat in the terminal (`/reset`, `/exit`).
- `playground serve ...`: the OpenAI-compatible HTTP server (playground/serve_cli.py, server/);
  `playground --attach URL` opens the read-only KV inspector on one (playground/attach_app.py).
stdout carries only the answer (or the JSON); stderr says what happens from the first moment:
each loading stage as it starts, the weights' percentage on a terminal, and at the end the
timings as llama.cpp prints them (load time, prompt eval and decode ms and tokens per second).
Every failure a user can cause (no model, offline without a cache, a bad prompt or flag) is one
line on stderr and exit status 1, never a traceback. This module only parses flags and prints;
the engine flags and their mapping to EngineConfig are playground/engine_args.py's, shared with
the app; the engine (model/engine/engine.py) does the work.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

from llm_playground.playground.engine_args import add_engine_flags, engine_config_from_args


def _sampling(p: argparse.ArgumentParser, max_tokens: int) -> None:
    p.add_argument("--max-tokens", type=int, default=max_tokens, help=f"new tokens at most ({max_tokens})")
    p.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (default)")
    p.add_argument("--top-p", type=float, default=1.0,
                   help="sample from the smallest set of tokens whose probability reaches P (1.0 = off)")
    p.add_argument("--top-k", type=int, default=0, help="sample from the K likeliest tokens (0 = off)")
    p.add_argument("--repetition-penalty", type=float, default=1.0,
                   help="divide positive logits of tokens already seen by this (and multiply "
                        "negative ones; 1.0 = off)")
    p.add_argument("--seed", type=int, default=None, help="seed for sampling (default: unseeded)")


def build_parser() -> argparse.ArgumentParser:
    """The `playground` argument parser: engine flags, and the generate and chat subcommands."""
    parser = argparse.ArgumentParser(prog="playground", description="Terminal LLM playground.")
    add_engine_flags(parser)
    sub = parser.add_subparsers(dest="command")
    gen = sub.add_parser("generate", help="one completion, streamed to stdout")
    add_engine_flags(gen, top=False)
    _sampling(gen, 128)
    gen.add_argument("--prompt", required=True, help="the prompt text")
    gen.add_argument("--chat", action="store_true",
                     help="wrap the prompt in the model's chat template (its default system prompt)")
    gen.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    gen.add_argument("--beams", type=int, default=0, metavar="K",
                     help="beam search with K beams: print the K hypotheses with their scores")
    gen.add_argument("--length-penalty", type=float, default=1.0,
                     help="beam score = logprob / length**P (Hugging Face's rule; default 1.0)")
    chat = sub.add_parser("chat", help="multi-turn chat in the terminal")
    add_engine_flags(chat, top=False)
    _sampling(chat, 512)
    chat.add_argument("--plain", action="store_true", help="line-based (the full-screen chat is "
                      "the default `playground`)")
    from llm_playground.playground.serve_cli import add_serve_parser
    add_serve_parser(sub, add_engine_flags)
    parser.add_argument("--attach", metavar="URL", default=None,
                        help="open the KV cache inspector on a running `playground serve` "
                             "(read-only), e.g. http://127.0.0.1:8000")
    return parser


def _say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


class _WeightsPercent:
    """The weights' load fraction as a percentage that rewrites one stderr line on a terminal
    (a pipe or a log gets the stage lines only, not a hundred updates)."""

    def __init__(self) -> None:
        self.tty = sys.stderr.isatty()
        self.shown = -1

    def __call__(self, fraction: float) -> None:
        """Show `fraction` (0..1) as a percentage when it moved a whole percent."""
        pct = int(fraction * 100)
        if self.tty and pct != self.shown:
            self.shown = pct
            print(f"\rweights {pct:3d}%", end="\n" if pct >= 100 else "", file=sys.stderr, flush=True)


def _engine(args):
    """Load the model and build the Engine the flags describe (engine_args owns the mapping);
    returns (engine, seconds it took, from the command's start)."""
    t0 = time.perf_counter()
    config = engine_config_from_args(args)
    _say(f"loading {args.model or 'the default model'} ...")      # before the slow imports
    from llm_playground.playground.parallel_engine import tensor_parallel_engine, tensor_parallel_size
    if tensor_parallel_size(args) > 1:
        return tensor_parallel_engine(args, config, _say), time.perf_counter() - t0
    from llm_playground.model.engine.engine import Engine
    from llm_playground.model.weights.loader import load_model
    loaded = load_model(args.model, config.dtype, config.device, progress=_say,
                        fraction=_WeightsPercent(), weights=config.weights,
                        group_size=config.group_size)
    _say("allocating the KV cache")
    engine = Engine(loaded, config)
    return engine, time.perf_counter() - t0


def print_timings(load_s: float, result: dict | None, total_s: float) -> None:
    """llama.cpp's closing lines (llama_perf_context_print), on stderr: load, prompt eval, eval
    (decode: one run per token after the first) and total, in ms and tokens per second."""
    def rate(ms: float, n: int, unit: str) -> str:
        if not n or ms <= 0:
            return f"{ms:10.2f} ms / {n:5d} {unit}"
        return (f"{ms:10.2f} ms / {n:5d} {unit} ({ms / n:8.2f} ms per token, "
                f"{1000 * n / ms:8.2f} tokens per second)")
    _say(f"       load time = {load_s * 1000:10.2f} ms")
    tokens = 0
    if result is not None:
        t = result["timings"]
        _say(f"prompt eval time = {rate(t['prefill_s'] * 1000, t['prefill_tokens'], 'tokens')}")
        _say(f"       eval time = {rate(t['decode_s'] * 1000, t['decode_tokens'], 'runs  ')}")
        tokens = len(result["prompt_ids"]) + len(result["generated_ids"])
    _say(f"      total time = {total_s * 1000:10.2f} ms / {tokens:5d} tokens")


def _params(args):
    from llm_playground.model.engine.sampling_params import SamplingParams
    return SamplingParams(temperature=args.temperature, top_p=args.top_p, top_k=args.top_k,
                          repetition_penalty=args.repetition_penalty, max_tokens=args.max_tokens,
                          seed=args.seed)


def _chat_ids(engine, messages: list[dict]) -> list[int]:
    template = engine.loaded.chat_template
    if not template:
        raise ValueError("this model has no chat template; run without --chat")
    from llm_playground.model.engine.chat_template import encode_chat
    return encode_chat(engine.tokenizer, template, messages)


def _run_one(engine, ids: list[int], params, echo: bool) -> dict:
    """Stream one request; returns ids, text, finish reason and timing figures."""
    from llm_playground.model.engine.engine import RequestError
    t0 = time.perf_counter()
    out_ids, text, reason, ttft = [], [], None, None
    pre_tok = pre_s = dec_tok = dec_s = 0.0
    reports = []
    proposed = accepted = 0
    for out in engine.iter_outputs(ids, params, on_report=reports.append):
        if out.error:
            raise RequestError(out.error)
        if out.speculation_refused:
            _say(f"note: {out.speculation_refused}")
        proposed, accepted = proposed + out.spec_proposed, accepted + out.spec_accepted
        out_ids += out.new_token_ids
        text.append(out.text_delta)
        if echo and out.text_delta:
            print(out.text_delta, end="", flush=True)
        reason = out.finish_reason or reason
    for r in reports:
        if r.num_prefill_tokens:
            pre_tok, pre_s = pre_tok + r.num_prefill_tokens, pre_s + r.step_time_s
        elif r.num_decode_tokens:
            dec_tok, dec_s = dec_tok + r.num_decode_tokens, dec_s + r.step_time_s
        ttft = ttft if ttft is not None else next(iter(r.ttft_s.values()), None)
    rows = sum(r.spec_rows for r in reports)
    spec = None if getattr(engine, "spec_planner", None) is None else {
        "verify_rows": rows, "proposed": proposed, "accepted": accepted,
        "acceptance": accepted / proposed if proposed else None,
        "tokens_per_verify_row": 1 + accepted / rows if rows else None}
    return {"prompt_ids": ids, "generated_ids": out_ids, "text": "".join(text),
            "finish_reason": reason, "speculation": spec,
            "timings": {"total_s": time.perf_counter() - t0, "ttft_s": ttft,
                        "prefill_tokens": int(pre_tok), "prefill_s": pre_s,
                        "prefill_tokens_per_s": pre_tok / pre_s if pre_s else None,
                        "decode_tokens": int(dec_tok), "decode_s": dec_s,
                        "decode_tokens_per_s": dec_tok / dec_s if dec_s else None}}


def cmd_generate(args) -> int:
    """`playground generate`: one completion (or beam search) for --prompt, as text or JSON."""
    t0 = time.perf_counter()
    params = _params(args)
    if not args.prompt:
        raise ValueError("empty prompt: pass some text with --prompt")
    engine, load_s = _engine(args)
    if args.chat:
        ids = _chat_ids(engine, [{"role": "user", "content": args.prompt}])
    else:
        ids = engine.tokenizer.encode_ordinary(args.prompt)
    if args.beams:
        code = _run_beams(engine, ids, args)
        print_timings(load_s, None, time.perf_counter() - t0)
        return code
    result = _run_one(engine, ids, params, echo=not args.json)
    result["timings"]["load_s"] = load_s
    if args.json:
        result["model"] = engine.loaded.name
        print(json.dumps(result, ensure_ascii=False), flush=True)
    else:
        print(flush=True)
    print_timings(load_s, result, time.perf_counter() - t0)
    return 0


def _run_beams(engine, ids: list[int], args) -> int:
    """`generate --beams K`: the K hypotheses of a beam search (model/engine/beam_search.py), best first."""
    from llm_playground.model.engine.beam_search import BeamSearchParams
    if args.temperature != 0.0:
        raise ValueError("beam search is deterministic: drop --temperature with --beams")
    if getattr(engine, "spec_planner", None) is not None:
        from llm_playground.model.engine.spec_planner import BEAM_SEARCH
        _say(f"note: speculation off for this request: {BEAM_SEARCH}")
    params = BeamSearchParams(beam_width=args.beams, max_tokens=args.max_tokens,
                              length_penalty=args.length_penalty)
    t0 = time.perf_counter()
    hyps = engine.beam_search(ids, params)
    if args.json:
        print(json.dumps({"model": engine.loaded.name, "prompt_ids": ids, "beams": [
            {"generated_ids": h.token_ids, "text": engine.tokenizer.decode(h.token_ids),
             "cumulative_logprob": h.cumulative_logprob, "score": h.score,
             "finish_reason": h.finish_reason} for h in hyps],
            "total_s": time.perf_counter() - t0}, ensure_ascii=False))
        return 0
    for rank, h in enumerate(hyps):
        print(f"--- beam {rank + 1}: score {h.score:.4f}  logprob {h.cumulative_logprob:.4f}  "
              f"{len(h.token_ids)} tokens  ({h.finish_reason})")
        print(engine.tokenizer.decode(h.token_ids), flush=True)
    return 0


def cmd_chat(args) -> int:
    """`playground chat --plain`: a line-by-line chat on stdin/stdout."""
    if not args.plain:
        raise ValueError("only `playground chat --plain` is a line tool; run `playground` for the full app")
    params = _params(args)
    engine, load_s = _engine(args)
    _say(f"load time = {load_s * 1000:.2f} ms")
    messages: list[dict] = []
    print("chat: type a message; /reset starts over, /exit (or Ctrl-D) quits.", file=sys.stderr)
    prompt = "> " if sys.stdin.isatty() else ""     # piped input: stdout holds only the replies
    while True:
        try:
            line = input(prompt)
        except EOFError:
            print(file=sys.stderr)
            return 0
        line = line.strip()
        if not line:
            continue
        if line == "/exit":
            return 0
        if line == "/reset":
            messages = []
            continue
        messages.append({"role": "user", "content": line})
        result = _run_one(engine, _chat_ids(engine, messages), params, echo=True)
        print(flush=True)
        messages.append({"role": "assistant", "content": result["text"]})


def main(argv: list[str] | None = None) -> int:
    """Run the app (no subcommand) or a subcommand; errors become one line and exit status 1."""
    args = build_parser().parse_args(argv)
    try:
        if args.command is None and args.attach:
            from llm_playground.playground.attach_app import run_attached
            run_attached(args)
            return 0
        if args.command == "serve":
            from llm_playground.playground.serve_cli import cmd_serve
            return cmd_serve(args, _engine)
        if args.command is None:
            from llm_playground.playground.app import run_app
            run_app(args)
            return 0
        return {"generate": cmd_generate, "chat": cmd_chat}[args.command](args)
    except KeyboardInterrupt:
        print(file=sys.stderr)
        return 130
    except Exception as e:  # one clear line for the user, never a traceback
        if os.environ.get("PLAYGROUND_DEBUG"):
            raise
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        print(f"playground: error: {msg}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
