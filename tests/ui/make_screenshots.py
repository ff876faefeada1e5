"""Write the README's screenshots (assets/ui-*.svg) from the real app on a real model.

    .venv/bin/python tests/ui/make_screenshots.py [--model PATH] [--out assets]

Drives the app headless (App.run_test) at 140 x 42: one chat exchange, the Tokenizers tab with
cl100k_base and o200k_base, the KV cache tab during a load of synthetic requests, and the
Attention tab with a sparse pattern and the weights of layer 0 head 0. Not a test (pytest does not
collect it); the pictures show whatever the engine does on this machine.
"""
from __future__ import annotations

import argparse
import asyncio
import sys
import time
from argparse import Namespace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from llm_playground.playground.app import PlaygroundApp  # noqa: E402
from llm_playground.playground.engine_factory import real_factory  # noqa: E402

SIZE = (140, 42)


async def wait_for(pilot, condition, timeout: float = 300.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {condition}")
        await pilot.pause(0.1)


async def shoot(model: str | None, out: Path) -> None:
    args = Namespace(model=model, device="cpu", dtype=None, block_size=None, kv_blocks=1024,
                     kv_budget=None, attention="dense")
    app = PlaygroundApp(real_factory(args), model_label=model or "the default model", cursor_blink=False)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: app.model_info is not None)
        chat = app.chat
        await pilot.click("#prompt")
        await pilot.press(*"Explain a KV cache in two sentences.", "enter")
        await wait_for(pilot, lambda: chat.ticket is None and len(chat.conversation.turns) == 2)
        app.clear_notifications()
        await pilot.pause(0.5)
        app.save_screenshot(str(out / "ui-chat.svg"))

        await pilot.press("f3")
        await wait_for(pilot, lambda: len(app.query("TokenizerPanel")) >= 3, timeout=120)
        app.query("TokenizerPanel").first().action_pick(3)
        app.set_focus(None)
        app.clear_notifications()
        await pilot.pause(0.5)
        app.save_screenshot(str(out / "ui-tokenizers.svg"))

        await pilot.press("f4")
        app.query_one("#kv-load-n").value = "12"
        await pilot.press("f8")
        await wait_for(pilot, lambda: app.query_one("KVView").cache is not None
                       and app.query_one("KVView").cache.num_shared > 0, timeout=120)
        await pilot.pause(2.0)
        app.query_one("#kv-grid").select(2)
        app.clear_notifications()
        app.save_screenshot(str(out / "ui-kv-cache.svg"))
        await wait_for(pilot, lambda: not app.engine_worker.load_running, timeout=300)

        await pilot.press("f5")
        app.query_one("#attn-spec").value = "sparse:256,64"
        await pilot.press("f9")
        view = app.query_one("AttentionView")
        await wait_for(pilot, lambda: view.pattern == "sparse:256,64")
        await pilot.press("f10")
        await wait_for(pilot, lambda: view.weights is not None and all(  # drawn off the UI thread
            g.drawn for g in app.query("HeatGrid")), timeout=120)
        app.set_focus(None)
        app.clear_notifications()
        await pilot.pause(0.5)
        app.save_screenshot(str(out / "ui-attention.svg"))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default=None)
    p.add_argument("--out", default=str(ROOT / "assets"))
    a = p.parse_args()
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    asyncio.run(shoot(a.model, out))
    print(f"wrote {', '.join(sorted(f.name for f in out.glob('ui-*.svg')))} to {out}")


if __name__ == "__main__":
    main()
