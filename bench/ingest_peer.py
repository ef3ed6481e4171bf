#!/usr/bin/env python3
"""The plain Python loop that `tidewater bench ingest` is compared with.

Reads a Parquet corpus with pyarrow, row group by row group; cuts each text into
fixed-size character windows (1000 characters with 100 of overlap by default, so a window
starts every 900 characters; a text of at most 1000 characters is one chunk, an empty one
none); embeds the chunks, either with sentence-transformers (CPU torch, 2 threads, the same
model files as Tidewater) or with an OpenAI-compatible `/v1/embeddings` endpoint, one
request at a time over one connection; and loads them into a pgvector table with `COPY`,
one COPY per embedded batch and a commit after each row group.

The table is dropped and created anew. `--index hnsw` creates the HNSW index (m 16,
ef_construction 256, as Tidewater's) before loading, so rows are indexed as they arrive,
like a live system; `--index ivfflat` builds an IVFFlat index after loading, with
rows/1000 lists up to a million rows and sqrt(rows) above (pgvector's advice).

The clock runs from opening the Parquet file until the index exists and everything is
committed; loading the model and creating the table come before it. The total is split
into reading and chunking, embedding, COPY (commits included) and the IVFFlat build.
The result is written to --json and printed to stdout; progress goes to stderr.

Run it from bench/run.sh, or by hand in a virtual environment that has pyarrow,
psycopg[binary] and, for --model-dir, sentence-transformers (outside the repository:
PyPI's torch is large):

    ~/.cache/tidewater-st-venv/bin/python bench/ingest_peer.py --parquet CORPUS.parquet \\
        --dsn "$(scripts/pgvector.sh start /tmp/pg 55991 | tail -n 1)" --table peer_chunks \\
        --index hnsw --model-dir ~/.cache/tidewater/models/all-MiniLM-L6-v2 --json OUT.json
"""

import argparse
import http.client
import importlib
import json
import math
import platform
import re
import sys
import time
import urllib.parse
from pathlib import Path

PROGRESS_EVERY_S = 10.0
READ_BATCH_ROWS = 1024


class Failure(Exception):
    """An error worth one line on stderr and an exit status, not a traceback."""

    def __init__(self, message, status=1):
        super().__init__(message)
        self.status = status


def require(module, pip_name):
    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise Failure(f"cannot import {module} ({e}): install it with `pip install '{pip_name}'`", 2)


def split_text(text, chunk_chars, overlap):
    """Fixed-size character windows; a window starts every chunk_chars - overlap characters."""
    if not text:
        return []
    if len(text) <= chunk_chars:
        return [text]
    step = chunk_chars - overlap
    chunks = []
    start = 0
    while True:
        chunks.append(text[start:start + chunk_chars])
        if start + chunk_chars >= len(text):
            return chunks
        start += step


def first_line(error):
    lines = str(error).strip().splitlines()
    return lines[0] if lines else type(error).__name__


def ivfflat_lists(rows):
    """pgvector's advice: rows / 1000 up to a million rows, sqrt(rows) above."""
    if rows <= 1_000_000:
        return max(1, rows // 1000)
    return int(math.sqrt(rows))


class SentenceTransformersEmbedder:
    def __init__(self, model_dir, batch):
        torch = require("torch", "torch")
        st = require("sentence_transformers", "sentence-transformers")
        torch.set_num_threads(2)
        self.model = st.SentenceTransformer(str(model_dir), device="cpu")
        dimension = getattr(self.model, "get_embedding_dimension", None) or self.model.get_sentence_embedding_dimension
        self.dimension = dimension()
        self.batch = batch
        self.label = f"sentence-transformers {st.__version__} ({Path(model_dir).resolve().name})"
        self.peer = "sentence-transformers"

    def embed(self, texts):
        vectors = self.model.encode(texts, batch_size=self.batch, normalize_embeddings=True)
        return [v.tolist() for v in vectors]


class EndpointEmbedder:
    """POST {base_url}/v1/embeddings over one persistent HTTP connection."""

    def __init__(self, base_url, dimension):
        parsed = urllib.parse.urlsplit(base_url)
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            raise Failure(f"--embedding-url must be an http(s) URL, got {base_url!r}", 2)
        self.scheme = parsed.scheme
        self.netloc = parsed.netloc
        self.path = parsed.path.rstrip("/") + "/v1/embeddings"
        self.endpoint = f"{self.scheme}://{self.netloc}{self.path}"
        self.dimension = dimension
        self.label = f"endpoint {base_url}"
        self.peer = "endpoint"
        self.conn = None

    def connect(self):
        cls = http.client.HTTPSConnection if self.scheme == "https" else http.client.HTTPConnection
        self.conn = cls(self.netloc, timeout=300)

    def post(self, body):
        if self.conn is None:
            self.connect()
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        self.conn.request("POST", self.path, body=body, headers=headers)
        response = self.conn.getresponse()
        return response.status, response.read()

    def embed(self, texts):
        body = json.dumps({"model": "stub", "input": texts}).encode()
        try:
            status, raw = self.post(body)
        except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
            # The server closed the kept-alive connection: reconnect once.
            self.conn.close()
            self.connect()
            try:
                status, raw = self.post(body)
            except OSError as e:
                raise Failure(f"cannot reach {self.endpoint}: {e}")
        except OSError as e:
            raise Failure(f"cannot reach {self.endpoint}: {e}")
        if status != 200:
            raise Failure(f"{self.endpoint} answered HTTP {status}: {raw[:300].decode(errors='replace')}")
        try:
            data = sorted(json.loads(raw)["data"], key=lambda d: d.get("index", 0))
            vectors = [d["embedding"] for d in data]
        except (ValueError, KeyError, TypeError) as e:
            raise Failure(f"{self.endpoint}: unexpected response ({e}): {raw[:300].decode(errors='replace')}")
        if len(vectors) != len(texts):
            raise Failure(f"{self.endpoint}: asked for {len(texts)} embeddings, got {len(vectors)}")
        for v in vectors:
            if len(v) != self.dimension:
                raise Failure(f"{self.endpoint}: got a vector of {len(v)} dimensions, --dimension is {self.dimension}")
        return vectors


def vector_literal(vector):
    return "[" + ",".join(map(str, vector)) + "]"


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parquet", type=Path, required=True, help="the corpus")
    parser.add_argument("--id-column", default="id", help="the document id column (default: id)")
    parser.add_argument("--text-column", default="text", help="the text column (default: text)")
    parser.add_argument("--dsn", required=True, help="libpq connection string of a PostgreSQL with pgvector")
    parser.add_argument("--table", required=True, help="the table to (re)create and load")
    parser.add_argument("--index", required=True, choices=["hnsw", "ivfflat"])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--model-dir", type=Path, help="embed with sentence-transformers and this model")
    source.add_argument("--embedding-url", help="embed with this OpenAI-compatible endpoint (base URL)")
    parser.add_argument("--dimension", type=int, help="the endpoint's vector length (with --embedding-url)")
    parser.add_argument("--chunk-chars", type=int, default=1000)
    parser.add_argument("--overlap", type=int, default=100)
    parser.add_argument("--batch", type=int, default=64, help="texts per embedding call")
    parser.add_argument("--limit-rows", type=int, help="read at most this many rows")
    parser.add_argument("--json", type=Path, required=True)
    args = parser.parse_args()
    if args.embedding_url and args.dimension is None:
        parser.error("--embedding-url needs --dimension")
    if args.model_dir and args.dimension is not None:
        parser.error("--dimension goes with --embedding-url; --model-dir takes it from the model")
    if args.dimension is not None and args.dimension < 1:
        parser.error("--dimension must be at least 1")
    if args.chunk_chars < 1:
        parser.error("--chunk-chars must be at least 1")
    if not 0 <= args.overlap < args.chunk_chars:
        parser.error("--overlap must be at least 0 and less than --chunk-chars")
    if args.batch < 1:
        parser.error("--batch must be at least 1")
    if args.limit_rows is not None and args.limit_rows < 0:
        parser.error("--limit-rows must not be negative")
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)?", args.table):
        parser.error(f"--table must be a plain (optionally schema-qualified) SQL name, got {args.table!r}")
    if not args.parquet.is_file():
        parser.error(f"--parquet: no such file: {args.parquet}")
    if args.model_dir and not args.model_dir.is_dir():
        parser.error(f"--model-dir: no such folder: {args.model_dir}")
    return args


def run(args):
    pyarrow = require("pyarrow", "pyarrow")
    pq = require("pyarrow.parquet", "pyarrow")
    psycopg = require("psycopg", "psycopg[binary]")

    # Checked before the table is dropped, and before the clock starts.
    try:
        schema = pq.read_schema(args.parquet)
    except (OSError, pyarrow.ArrowException) as e:
        raise Failure(f"cannot read {args.parquet} as Parquet: {e}", 2)
    for option, column in (("--id-column", args.id_column), ("--text-column", args.text_column)):
        if column not in schema.names:
            raise Failure(f"{args.parquet} has no column {column!r} ({option}); its columns: {', '.join(schema.names)}", 2)

    if args.model_dir:
        embedder = SentenceTransformersEmbedder(args.model_dir, args.batch)
    else:
        embedder = EndpointEmbedder(args.embedding_url, args.dimension)

    try:
        conn = psycopg.connect(args.dsn)
    except psycopg.Error as e:
        raise Failure(f"cannot connect to {args.dsn!r}: {first_line(e)}")
    try:
        with conn:
            return ingest(args, embedder, conn, pq, pyarrow.__version__, psycopg.__version__)
    except psycopg.Error as e:
        raise Failure(f"PostgreSQL: {first_line(e)}")


def ingest(args, embedder, conn, pq, pyarrow_version, psycopg_version):
    dimension = embedder.dimension
    table = args.table
    with conn.cursor() as cur:
        cur.execute("SET client_min_messages = warning")
        cur.execute("CREATE EXTENSION IF NOT EXISTS vector")
        cur.execute(f"DROP TABLE IF EXISTS {table}")
        cur.execute(
            f"CREATE TABLE {table} (id bigserial primary key, doc_id text not null, ordinal int not null,"
            f" text text not null, embedding vector({dimension}) not null)"
        )
        if args.index == "hnsw":
            cur.execute(
                f"CREATE INDEX ON {table} USING hnsw (embedding vector_cosine_ops)"
                " WITH (m = 16, ef_construction = 256)"
            )
    conn.commit()

    timings = {"read_chunk_s": 0.0, "embed_s": 0.0, "copy_s": 0.0, "index_s": 0.0}
    rows = 0
    chunks = 0
    pending = []  # (doc_id, ordinal, text) waiting to be embedded
    copy_sql = f"COPY {table} (doc_id, ordinal, text, embedding) FROM STDIN"

    def embed_and_copy(batch):
        nonlocal chunks, last_progress
        t = time.perf_counter()
        vectors = embedder.embed([text for _, _, text in batch])
        timings["embed_s"] += time.perf_counter() - t
        t = time.perf_counter()
        with conn.cursor() as cur:
            with cur.copy(copy_sql) as copy:
                for (doc_id, ordinal, text), vector in zip(batch, vectors):
                    copy.write_row((doc_id, ordinal, text, vector_literal(vector)))
        timings["copy_s"] += time.perf_counter() - t
        chunks += len(batch)
        now = time.perf_counter()
        if now - last_progress >= PROGRESS_EVERY_S:
            last_progress = now
            print(f"{rows} rows, {chunks} chunks, {chunks / (now - start):.1f} chunks/s", file=sys.stderr, flush=True)

    start = time.perf_counter()
    last_progress = start
    t = start
    parquet = pq.ParquetFile(args.parquet)
    timings["read_chunk_s"] += time.perf_counter() - t
    for row_group in range(parquet.num_row_groups):
        if args.limit_rows is not None and rows >= args.limit_rows:
            break
        batches = parquet.iter_batches(
            batch_size=READ_BATCH_ROWS, row_groups=[row_group], columns=[args.id_column, args.text_column]
        )
        while True:
            t = time.perf_counter()
            record_batch = next(batches, None)
            if record_batch is None:
                timings["read_chunk_s"] += time.perf_counter() - t
                break
            ids = record_batch.column(args.id_column).to_pylist()
            texts = record_batch.column(args.text_column).to_pylist()
            if args.limit_rows is not None:
                ids = ids[: args.limit_rows - rows]
                texts = texts[: len(ids)]
            for doc_id, text in zip(ids, texts):
                doc_id = "" if doc_id is None else str(doc_id)
                for ordinal, chunk in enumerate(split_text(text or "", args.chunk_chars, args.overlap)):
                    pending.append((doc_id, ordinal, chunk))
            rows += len(ids)
            timings["read_chunk_s"] += time.perf_counter() - t
            while len(pending) >= args.batch:
                embed_and_copy(pending[: args.batch])
                del pending[: args.batch]
            if args.limit_rows is not None and rows >= args.limit_rows:
                break
        if pending:
            embed_and_copy(pending)
            pending = []
        t = time.perf_counter()
        conn.commit()
        timings["copy_s"] += time.perf_counter() - t

    lists = None
    if args.index == "ivfflat":
        lists = ivfflat_lists(chunks)
        t = time.perf_counter()
        with conn.cursor() as cur:
            cur.execute(f"CREATE INDEX ON {table} USING ivfflat (embedding vector_cosine_ops) WITH (lists = {lists})")
        conn.commit()
        timings["index_s"] = time.perf_counter() - t
    seconds = time.perf_counter() - start

    return {
        "peer": f"pyarrow → {embedder.peer} → pgvector COPY",
        "rows": rows,
        "chunks": chunks,
        "seconds": seconds,
        "records_per_s": chunks / seconds if seconds > 0 else None,
        "ms_per_record": 1000 * seconds / chunks if chunks else None,
        **timings,
        "index": args.index,
        "lists": lists,
        "embedder": embedder.label,
        "dimension": dimension,
        "chunk_chars": args.chunk_chars,
        "overlap": args.overlap,
        "batch": args.batch,
        "python": platform.python_version(),
        "psycopg": psycopg_version,
        "pyarrow": pyarrow_version,
    }


def main() -> int:
    args = parse_args()
    try:
        result = run(args)
    except Failure as e:
        print(f"{Path(sys.argv[0]).name}: {e}", file=sys.stderr)
        return e.status
    print(
        f"{result['rows']} rows, {result['chunks']} chunks in {result['seconds']:.2f} s"
        f" ({result['records_per_s'] or 0:.1f} chunks/s; read+chunk {result['read_chunk_s']:.2f} s,"
        f" embed {result['embed_s']:.2f} s, copy {result['copy_s']:.2f} s, index {result['index_s']:.2f} s)",
        file=sys.stderr,
    )
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n")
    print(json.dumps(result, indent=2, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
