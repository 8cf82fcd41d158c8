"""Train a tiny random HF decoder on a few sentences (run with a toolchain's python: torch + tokenizers).

usage: python train_tiny.py MODEL_DIR TEXTS_JSON

A random model scores perplexity ~ its vocabulary size, which the quality gate rightly calls an
untrained reference; a few seconds of training on the test corpus gives the tiny fixtures a real,
low perplexity on the texts the tests evaluate, so the gate's ratio means something.
"""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path

import torch
from tokenizers import Tokenizer
from transformers import AutoModelForCausalLM

STEPS, BATCH, WINDOW, LR = 120, 8, 48, 5e-3


def main(model_dir: Path, texts: list[str]) -> None:
    """Sentences in random order (a fixed order would be memorized, and a test text that joins them
    differently then scores far worse than uniform); weight decay keeps the model from overconfidence."""
    torch.manual_seed(0)
    rng = random.Random(0)
    tok = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
    unique = sorted(set(texts))
    stream: list[int] = []
    for _ in range(400):
        stream += tok.encode(" " + rng.choice(unique), add_special_tokens=False).ids
    data = torch.tensor(stream, dtype=torch.long)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=LR, weight_decay=0.1)
    for _ in range(STEPS):
        starts = torch.randint(0, len(data) - WINDOW - 1, (BATCH,))
        batch = torch.stack([data[s : s + WINDOW] for s in starts.tolist()])
        loss = model(input_ids=batch, labels=batch).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    model.save_pretrained(model_dir)
    print(json.dumps({"final_loss": float(loss.detach())}))


if __name__ == "__main__":
    main(Path(sys.argv[1]), json.loads(Path(sys.argv[2]).read_text()))
