#!/usr/bin/env python3
"""A deterministic OpenAI-compatible chat-completions server for tests (Python 3 stdlib only).

Usage: scripts/openai-test-server.py [--port PORT] [--record FILE] [--reply TEXT]
                                     [--fail N] [--status CODE] [--retry-after SECONDS]
                                     [--delay-ms MS] [--chunk-delay-ms MS] [--model NAME]

Serves on 127.0.0.1:
  POST /v1/chat/completions  "stream": false -> a chat.completion JSON;
                             "stream": true  -> text/event-stream: a role-only chunk, the
                             reply word by word as chat.completion.chunk deltas (each event
                             written in two halves, so clients see events split across
                             reads), a chunk with finish_reason "stop", then "data: [DONE]".
  POST /v1/embeddings        deterministic embeddings of --embedding-dim floats: each word
                             (lower-cased, \w+) adds +1 or -1 at a position chosen by its
                             BLAKE2 hash, and the vector is normalised; a text without
                             words gets a unit vector. Fast, and the same text always gives
                             the same vector, so runs can be compared bit for bit. Not
                             recorded, and never failed by --fail.
  GET  /v1/models            a model list holding --model.
  anything else              404 with an OpenAI-style error JSON.

The reply is --reply TEXT, or by default
  "Test reply to N messages: <the first 40 characters of the last user message>"
so tests can tell which prompt it answers.

--port PORT          port to listen on; 0 (the default) picks a free one.
--record FILE        append each chat-completions request body to FILE as one JSON line,
                     flushed before replying (failed requests included).
--fail N             the first N chat-completions requests get HTTP --status (default 500)
                     with {"error": {"message": ..., "type": ..., "code": ...}}.
--retry-after SECS   send "Retry-After: SECS" with those failures.
--delay-ms MS        wait MS before each reply (before the headers).
--chunk-delay-ms MS  wait MS between streamed events.

On start it prints exactly one line, "listening on 127.0.0.1:PORT", to stdout and flushes.
It exits with status 0 on SIGTERM or SIGINT.
"""
import argparse
import hashlib
import json
import math
import re
import signal
import sys
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class State:
    """What the request handlers share."""

    def __init__(self, args):
        self.args = args
        self.lock = threading.Lock()
        self.requests = 0
        self.record = open(args.record, "a", encoding="utf-8") if args.record else None

    def note(self, body):
        """Records a request and returns its number, counting from 1."""
        with self.lock:
            self.requests += 1
            if self.record:
                self.record.write(json.dumps(body, separators=(",", ":")) + "\n")
                self.record.flush()
            return self.requests


def reply_for(args, body):
    if args.reply is not None:
        return args.reply
    messages = body.get("messages") or []
    last_user = next(
        (m.get("content") or "" for m in reversed(messages) if m.get("role") == "user"), ""
    )
    return f"Test reply to {len(messages)} messages: {str(last_user)[:40]}"


def embed(text, dim):
    """The deterministic embedding described in the module docstring."""
    vector = [0.0] * dim
    for word in re.findall(r"\w+", str(text).lower()):
        digest = hashlib.blake2b(word.encode(), digest_size=8).digest()
        position = int.from_bytes(digest[:4], "little") % dim
        vector[position] += 1.0 if digest[4] & 1 else -1.0
    norm = math.sqrt(sum(x * x for x in vector))
    if norm == 0:
        vector[0], norm = 1.0, 1.0
    return [x / norm for x in vector]


def pieces(text):
    """The reply word by word, each word with the whitespace before it; they join to text."""
    words = re.findall(r"\s*\S+", text)
    tail = text[len("".join(words)):]
    return words + ([tail] if tail else [])


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "openai-test-server/1"

    def log_message(self, format, *args):  # noqa: A002 - the base class's name
        pass  # quiet: tests read stdout and stderr only on failure

    @property
    def state(self):
        return self.server.state

    def send_json(self, status, payload, extra_headers=()):
        data = json.dumps(payload).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for name, value in extra_headers:
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def not_found(self):
        self.send_json(
            404,
            {"error": {"message": f"no route for {self.command} {self.path}",
                       "type": "not_found_error", "code": 404}},
        )

    def do_GET(self):
        if self.path.rstrip("/") == "/v1/models":
            self.send_json(200, {"object": "list", "data": [
                {"id": self.state.args.model, "object": "model", "created": 0,
                 "owned_by": "tidewater-test"}]})
        else:
            self.not_found()

    def do_POST(self):
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length)
        if self.path == "/v1/embeddings":
            self.embeddings(raw)
            return
        if self.path != "/v1/chat/completions":
            self.not_found()
            return
        try:
            body = json.loads(raw)
            if not isinstance(body, dict):
                raise ValueError("the body is not a JSON object")
        except ValueError as e:
            self.send_json(400, {"error": {"message": f"invalid JSON body: {e}",
                                           "type": "invalid_request_error", "code": 400}})
            return
        args = self.state.args
        number = self.state.note(body)
        if args.delay_ms:
            time.sleep(args.delay_ms / 1000)
        if number <= args.fail:
            headers = [("Retry-After", str(args.retry_after))] if args.retry_after is not None else []
            self.send_json(
                args.status,
                {"error": {"message": f"simulated failure {number} of {args.fail}",
                           "type": "server_error", "code": args.status}},
                headers,
            )
            return
        model = body.get("model") or args.model
        reply = reply_for(args, body)
        if body.get("stream"):
            self.stream(model, reply)
        else:
            self.complete(model, reply, body)

    def embeddings(self, raw):
        try:
            body = json.loads(raw)
            texts = body["input"]
            texts = [texts] if isinstance(texts, str) else list(texts)
        except (ValueError, KeyError, TypeError) as e:
            self.send_json(400, {"error": {"message": f"invalid embeddings request: {e}",
                                           "type": "invalid_request_error", "code": 400}})
            return
        data = [{"object": "embedding", "index": i, "embedding": embed(text, self.state.args.embedding_dim)}
                for i, text in enumerate(texts)]
        self.send_json(200, {"object": "list", "data": data, "model": body.get("model", ""),
                             "usage": {"prompt_tokens": 0, "total_tokens": 0}})

    def complete(self, model, reply, body):
        prompt_words = sum(len(str(m.get("content", "")).split()) for m in body.get("messages") or [])
        reply_words = len(reply.split())
        self.send_json(200, {
            "id": f"chatcmpl-{uuid.uuid4().hex[:12]}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": reply},
                         "finish_reason": "stop"}],
            "usage": {"prompt_tokens": prompt_words, "completion_tokens": reply_words,
                      "total_tokens": prompt_words + reply_words},
        })

    def stream(self, model, reply):
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        base = {"id": f"chatcmpl-{uuid.uuid4().hex[:12]}", "object": "chat.completion.chunk",
                "created": int(time.time()), "model": model}

        def chunk(delta, finish_reason=None):
            return {**base, "choices": [{"index": 0, "delta": delta,
                                         "finish_reason": finish_reason}]}

        events = [": test server\n\n", f"data: {json.dumps(chunk({'role': 'assistant', 'content': ''}))}\n\n"]
        events += [f"data: {json.dumps(chunk({'content': p}))}\n\n" for p in pieces(reply)]
        events += [f"data: {json.dumps(chunk({}, 'stop'))}\n\n", "data: [DONE]\n\n"]
        delay = self.state.args.chunk_delay_ms / 1000
        try:
            for i, event in enumerate(events):
                if i and delay:
                    time.sleep(delay)
                data = event.encode("utf-8")
                half = len(data) // 2
                for part in (data[:half], data[half:]):
                    self.wfile.write(f"{len(part):x}\r\n".encode() + part + b"\r\n")
                    self.wfile.flush()
            self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True  # the client went away mid-stream


def main():
    parser = argparse.ArgumentParser(
        description="A deterministic OpenAI-compatible chat-completions server for tests.")
    parser.add_argument("--port", type=int, default=0, help="port; 0 picks a free one")
    parser.add_argument("--record", help="append each request body to this file as a JSON line")
    parser.add_argument("--reply", help="the reply text (default: quotes the prompt)")
    parser.add_argument("--fail", type=int, default=0, help="fail the first N requests")
    parser.add_argument("--status", type=int, default=500, help="status of those failures")
    parser.add_argument("--retry-after", type=int, help="Retry-After seconds sent with failures")
    parser.add_argument("--delay-ms", type=int, default=0, help="wait before each reply")
    parser.add_argument("--chunk-delay-ms", type=int, default=0, help="wait between streamed events")
    parser.add_argument("--model", default="test-model", help="the model /v1/models lists")
    parser.add_argument("--embedding-dim", type=int, default=64, help="length of /v1/embeddings vectors")
    args = parser.parse_args()

    server = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    server.daemon_threads = True
    server.state = State(args)

    def stop(signum, frame):
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    print(f"listening on 127.0.0.1:{server.server_address[1]}", flush=True)
    try:
        server.serve_forever()
    finally:
        server.server_close()


if __name__ == "__main__":
    main()
