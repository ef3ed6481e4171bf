#!/usr/bin/env python3
"""The peers Tidewater's benchmarks are compared with, run on the same inputs.

1. Embedding throughput of sentence-transformers (CPU torch, 2 threads, the same model
   files as Tidewater) on the texts `tidewater bench embed --dump-texts` wrote.
2. Retrieval quality of exact (brute-force) search over sentence-transformers vectors of
   the chunks `tidewater bench squad --dump-chunks` indexed, with the same questions.

Run it from bench/run.sh, or by hand in a virtual environment that has
sentence-transformers (outside the repository: PyPI's torch is large):

    ~/.cache/tidewater-st-venv/bin/python bench/peer.py --texts T.json --chunks C.json --json OUT.json
"""

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path


def default_model_dir() -> Path:
    """Resolved like tidewater_embed::default_model_dir() and scripts/fetch-model.sh."""
    if os.environ.get("TIDEWATER_MODEL_DIR"):
        return Path(os.environ["TIDEWATER_MODEL_DIR"])
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.environ["HOME"], ".cache")
    return Path(cache) / "tidewater/models/all-MiniLM-L6-v2"


def throughput(model, texts, runs, batch_size):
    model.encode(texts[:8], batch_size=batch_size)  # warm-up
    seconds = []
    for _ in range(runs):
        start = time.perf_counter()
        model.encode(texts, batch_size=batch_size, normalize_embeddings=True)
        seconds.append(time.perf_counter() - start)
    tokens = sum(min(len(model.tokenizer(t)["input_ids"]), model.max_seq_length) for t in texts)
    median = statistics.median(seconds)
    return {
        "texts": len(texts),
        "tokens": tokens,
        "mean_tokens": tokens / len(texts),
        "median_seconds": median,
        "texts_per_second": len(texts) / median,
        "tokens_per_second": tokens / median,
        "runs": seconds,
    }


def retrieval(model, chunks, questions, batch_size):
    import numpy as np

    chunk_vectors = model.encode([c["text"] for c in chunks], batch_size=batch_size, normalize_embeddings=True)
    query_vectors = model.encode([q["question"] for q in questions], batch_size=batch_size, normalize_embeddings=True)
    scores = query_vectors @ chunk_vectors.T
    hits = {1: 0, 5: 0, 10: 0}
    reciprocal = 0.0
    for row, question in zip(scores, questions):
        ranked_docs = []
        for i in np.argsort(-row):
            doc = chunks[i]["doc_id"]
            if doc not in ranked_docs:
                ranked_docs.append(doc)
            if len(ranked_docs) == 10:
                break
        rank = ranked_docs.index(question["doc_id"]) + 1 if question["doc_id"] in ranked_docs else None
        for k in hits:
            if rank is not None and rank <= k:
                hits[k] += 1
        reciprocal += 1.0 / rank if rank else 0.0
    n = len(questions)
    return {"recall@1": hits[1] / n, "recall@5": hits[5] / n, "recall@10": hits[10] / n, "mrr@10": reciprocal / n, "questions": n}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--texts", type=Path, help="output of `tidewater bench embed --dump-texts`")
    parser.add_argument("--chunks", type=Path, help="output of `tidewater bench squad --dump-chunks`")
    parser.add_argument("--model-dir", type=Path, help="the model (default: Tidewater's default model)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    import torch
    from sentence_transformers import SentenceTransformer

    torch.set_num_threads(args.threads)
    # The model's own sentence_bert_config.json sets its length (256 for MiniLM, 384 for
    # MPNet), as Tidewater reads it.
    model = SentenceTransformer(str(args.model_dir or default_model_dir()), device="cpu")
    result = {"peer": "sentence-transformers", "torch": torch.__version__, "threads": args.threads}
    if args.texts:
        texts = json.loads(args.texts.read_text())
        result["embed"] = {
            "chunks_250_tokens": throughput(model, texts["chunks"], args.runs, args.batch_size),
            "short_queries": throughput(model, texts["queries"], args.runs, args.batch_size),
        }
        for name, r in result["embed"].items():
            print(f"{name:<18} {r['texts']:>6} texts {r['mean_tokens']:>7.1f} tok {r['texts_per_second']:>9.1f} texts/s {r['tokens_per_second']:>9.0f} tokens/s")
    if args.chunks:
        data = json.loads(args.chunks.read_text())
        result["squad_exact"] = retrieval(model, data["chunks"], data["questions"], args.batch_size)
        r = result["squad_exact"]
        print(f"exact search, sentence-transformers vectors: recall@1 {r['recall@1']:.4f} recall@5 {r['recall@5']:.4f} recall@10 {r['recall@10']:.4f} MRR@10 {r['mrr@10']:.4f}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
