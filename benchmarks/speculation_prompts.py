"""The prompts of benchmarks/speculation.py: tasks that copy from their input and tasks that do not.

Copying (prompt lookup should pay): summarise a passage (the answer reuses its phrases),
extract fields from a record, edit code (most of the function comes back unchanged). Not
copying (speculation must back off): open-ended writing and explanation. Each is one user turn
through the model's chat template.
"""
from __future__ import annotations

PASSAGE = (
    "The Rhine is one of the major rivers of Europe. It begins in the Swiss Alps, flows north "
    "through Lake Constance, forms part of the border between Germany and France, and then runs "
    "through the industrial Ruhr region before reaching the North Sea in the Netherlands. For "
    "centuries the Rhine has been an important trade route: barges carry coal, grain, chemicals "
    "and containers between the port of Rotterdam and cities such as Cologne, Duisburg and "
    "Basel. The river is also known for its castles and vineyards, especially in the Middle "
    "Rhine valley between Bingen and Koblenz, which is a UNESCO World Heritage Site.")

RECORD = (
    "Order 48213 was placed on 12 March 2024 by Maria Lopez (maria.lopez@example.com) for "
    "three items: a blue ceramic teapot (SKU TP-2201, 34.50 EUR), two linen napkins "
    "(SKU NP-0310, 6.25 EUR each) and a bamboo tray (SKU TR-1188, 18.00 EUR). Shipping to "
    "Calle Mayor 17, 28013 Madrid, Spain, by standard post; the customer asked for gift "
    "wrapping and paid by credit card.")

CODE = '''def moving_average(values, window):
    """Return the moving averages of values over the given window."""
    result = []
    for i in range(len(values)):
        if i + 1 < window:
            continue
        total = 0
        for j in range(i + 1 - window, i + 1):
            total += values[j]
        result.append(total / window)
    return result


def normalise(values):
    """Scale values so that they sum to one."""
    total = sum(values)
    return [v / total for v in values]
'''

COPYING = {
    "summarise": f"Summarise this passage in three sentences, reusing its wording:\n\n{PASSAGE}",
    "extract": ("Extract the order number, date, customer name, email, every item with its SKU "
                f"and price, and the address, one per line:\n\n{RECORD}"),
    "edit-code": ("Rename the function moving_average to rolling_mean and the parameter window "
                  f"to size. Return the whole file, otherwise unchanged:\n\n{CODE}"),
}

OTHER = {
    "poem": "Write a short poem about a lighthouse keeper who befriends a seagull.",
    "explain": "Explain to a ten-year-old why the sky is blue and sunsets are red.",
    "story": "Tell a brief story about a robot who learns to bake bread.",
}


def prompt_ids(loaded, text: str) -> list[int]:
    """One user turn through the model's chat template (plain text when it has none)."""
    from llm_playground.model.engine.chat_template import encode_chat
    if loaded.chat_template:
        return encode_chat(loaded.tokenizer, loaded.chat_template,
                           [{"role": "user", "content": text}])
    return loaded.tokenizer.encode(text)
