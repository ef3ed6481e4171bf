#!/usr/bin/env python3
"""Computes the reference vectors that tidewater-embed's parity test compares against.

The vectors come from the sentence-transformers library itself, run on the same model
files the Rust backend loads, so the test checks the whole pipeline (tokenisation,
truncation at the model's max_seq_length, the encoder, mean pooling, normalisation)
against the implementation everyone else uses.

Re-run it whenever the model or the text set changes:

    scripts/fetch-model.sh [NAME]                       # the model, once
    python3 -m venv ~/.cache/tidewater-st-venv          # outside the repository:
    ~/.cache/tidewater-st-venv/bin/pip install sentence-transformers   # torch is large
    ~/.cache/tidewater-st-venv/bin/python bench/reference/make_reference.py [--model NAME]

NAME is a model scripts/fetch-model.sh knows; all-MiniLM-L6-v2 unless given. The model
directory is resolved as that script resolves it. The vectors of all-MiniLM-L6-v2 go to
crates/tidewater-embed/tests/fixtures/reference_vectors.json, those of any other model to
reference_vectors-NAME.json beside it, each as
    {"model": NAME, "max_seq_length": N, "generator": {...versions...},
     "texts": [...], "token_counts": [...], "vectors": [[...], ...]}
`token_counts` are the tokenizer's counts with special tokens and without truncation,
the oracle for `Embedder::count_tokens`.
"""

import argparse
import json
import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
FIXTURES = REPO / "crates/tidewater-embed/tests/fixtures"
SQUAD = REPO.parent / "shared/data/squad-v2-dev-subset.json"
DEFAULT_MODEL = "all-MiniLM-L6-v2"

# The models scripts/fetch-model.sh fetches, each with the max_seq_length its
# sentence_bert_config.json sets: the length sentence-transformers embeds at, and so the
# one the reference is made at. Checking it also catches a model directory that holds
# another model than the one named.
MAX_SEQ_LENGTHS = {
    "all-MiniLM-L6-v2": 256,
    "all-mpnet-base-v2": 384,
}


def default_model_dir(model: str) -> Path:
    """Resolved like scripts/fetch-model.sh (and, for the default model,
    tidewater_embed::default_model_dir())."""
    if os.environ.get("TIDEWATER_MODEL_DIR"):
        # The default model's directory; the others go beside it.
        default = Path(os.environ["TIDEWATER_MODEL_DIR"])
        return default if model == DEFAULT_MODEL else default.with_name(model)
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.environ["HOME"], ".cache")
    return Path(cache) / "tidewater/models" / model


def default_out(model: str) -> Path:
    # The default model keeps the name the parity test has always read.
    if model == DEFAULT_MODEL:
        return FIXTURES / "reference_vectors.json"
    return FIXTURES / f"reference_vectors-{model}.json"


def texts(squad_path: Path) -> list:
    squad = {a["title"]: a["paragraphs"] for a in json.loads(squad_path.read_text())["data"]}
    normans = squad["Normans"]
    complexity = squad["Computational_complexity_theory"]
    california = squad["Southern_California"]
    every_paragraph = [p["context"] for ps in squad.values() for p in ps]
    return [
        # Short queries, as users type them.
        "What is the capital of France?",
        "how do i reset my password",
        "Normans",
        normans[0]["qas"][0]["question"],
        complexity[0]["qas"][0]["question"],
        # Edge cases of the tokenizer.
        "",
        "Hello, world!!! ...??? --- (parentheses) [brackets] #hashtag @mention $100.00 50% off",
        "Café au lait, naïve façade — déjà vu; école vs e\u0301cole.",
        "東京は日本の首都です。北京是中国的首都。",
        "I love pizza 🍕🍕 and 🚀 rockets!",
        "Σωκράτης и Платон discussed ethics in Ἀθῆναι.",
        'fn main() { println!("Hello, {}", 42); }',
        "Contact support@example.com or visit https://example.com/docs?q=1&lang=en",
        "In 1066, William the Conqueror won the Battle of Hastings with about 7,000 men.",
        "  multiple   spaces\tand\ttabs\nand\r\nnewlines  ",
        "THE QUICK BROWN FOX JUMPS OVER THE LAZY DOG",
        "Pneumonoultramicroscopicsilicovolcanoconiosis",
        # Paragraphs as they are ingested.
        normans[0]["context"],
        complexity[1]["context"],
        california[2]["context"],
        # The longest SQuAD paragraph, and several joined: beyond 256 tokens, so truncated.
        max(every_paragraph, key=len),
        " ".join(p["context"] for p in normans[:4]),
    ]


def short(x: float) -> float:
    # Nine significant digits round-trip a float32 exactly; more only bloats the file.
    return float(f"{x:.9g}")


def to_json(out: dict) -> str:
    """Pretty JSON with one line per text and per vector, so that diffs stay readable."""
    lines = []
    for key, value in out.items():
        if isinstance(value, list) and key != "token_counts":
            items = ",\n".join("  " + json.dumps(v, ensure_ascii=False) for v in value)
            lines.append(f" {json.dumps(key)}: [\n{items}\n ]")
        else:
            lines.append(f" {json.dumps(key)}: {json.dumps(value, ensure_ascii=False)}")
    return "{\n" + ",\n".join(lines) + "\n}\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=sorted(MAX_SEQ_LENGTHS), default=DEFAULT_MODEL)
    parser.add_argument("--model-dir", type=Path,
                        help="default: resolved like scripts/fetch-model.sh")
    parser.add_argument("--out", type=Path,
                        help="default: tests/fixtures/reference_vectors[-NAME].json")
    parser.add_argument("--squad", type=Path, default=SQUAD)
    args = parser.parse_args()
    model_dir = args.model_dir or default_model_dir(args.model)
    out_path = args.out or default_out(args.model)
    expected_length = MAX_SEQ_LENGTHS[args.model]

    if not (model_dir / "model.safetensors").is_file():
        print(f"no model in {model_dir}; run scripts/fetch-model.sh {args.model}",
              file=sys.stderr)
        return 1

    import sentence_transformers
    import torch
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(model_dir), device="cpu")
    if model.max_seq_length != expected_length:
        print(f"expected max_seq_length {expected_length} for {args.model}, the model in "
              f"{model_dir} says {model.max_seq_length}", file=sys.stderr)
        return 1

    inputs = texts(args.squad)
    vectors = model.encode(inputs, batch_size=8, convert_to_numpy=True,
                           normalize_embeddings=False)
    token_counts = [len(model.tokenizer(t, truncation=False)["input_ids"]) for t in inputs]
    if max(token_counts) <= model.max_seq_length:
        print("no text exceeds max_seq_length: truncation would go untested", file=sys.stderr)
        return 1

    out = {
        "model": args.model,
        "max_seq_length": model.max_seq_length,
        "generator": {
            "script": "bench/reference/make_reference.py",
            "sentence_transformers": sentence_transformers.__version__,
            "torch": torch.__version__,
        },
        "texts": inputs,
        "token_counts": token_counts,
        "vectors": [[short(x) for x in v.tolist()] for v in vectors],
    }
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(to_json(out))
    print(f"wrote {len(inputs)} vectors of {vectors.shape[1]} floats to {out_path}; "
          f"token counts {min(token_counts)}..{max(token_counts)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
