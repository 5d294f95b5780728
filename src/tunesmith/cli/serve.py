"""`tunesmith serve`: an OpenAI-compatible server for a model or run, recorded as a run."""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import asdict

from tunesmith.cli._common import add_run_options, run_for
from tunesmith.cli.config_args import add_config_arguments, given_options
from tunesmith.server.config import ServerConfig

LOOPBACK = ("127.0.0.1", "localhost", "::1")


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "serve",
        help="serve a model over an OpenAI-compatible HTTP API",
        description=(
            "Serve a model over HTTP as OpenAI's /v1/completions, /v1/chat/completions and "
            "/v1/models, with /tokenize, /detokenize, /metrics and /health (point any OpenAI "
            "client at the printed URL). Ctrl-C stops it."
        ),
    )
    p.add_argument("--model", default="gpt2", help="hub id, model folder, or run (runs/N) to serve")
    p.add_argument("--name", help="model name clients send and see (default: the --model value)")
    add_config_arguments(p, ServerConfig)
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    p.add_argument("--dtype", default="auto", help="auto, float32, bfloat16 or float16")
    p.add_argument(
        "--quantize",
        default="none",
        choices=("none", "int8"),
        help="int8: weight-only int8 linear layers and LM head (faster on CPU)",
    )
    add_run_options(p)
    p.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    from tunesmith.checkpoint import resolve_model_dir
    from tunesmith.generate import TextGenerator
    from tunesmith.runs import is_run_reference
    from tunesmith.runs.references import Reference
    from tunesmith.server import ChatTemplate, RequestLog, serve

    options = given_options(args, ServerConfig)
    options.setdefault("api_key", os.environ.get("TUNESMITH_API_KEY") or None)
    config = ServerConfig(**options)
    params = {
        "model": args.model,
        "name": args.name,
        "device": args.device,
        "dtype": args.dtype,
        "quantize": args.quantize,
        **asdict(config),
        "api_key": config.api_key is not None,  # whether one was set, never the key
    }
    args.command_line = _without_key(args.command_line)
    with run_for(args, "serve", params) as run:
        source, name = args.model, args.name or args.model
        if is_run_reference(args.model):
            resolved = run.resolve_use(args.model)
            source = str(resolved.path)
            # runs/last would name another run tomorrow: clients see the run's number
            name = args.name or str(Reference(resolved.run_id, resolved.reference.subpath))
        generator = TextGenerator.load(
            source, device=args.device, dtype=args.dtype, quantize=args.quantize
        )
        template = ChatTemplate.from_folder(resolve_model_dir(source))
        log = RequestLog(run.dir / "requests.jsonl" if run.enabled else None)
        totals = serve(generator, config, name, log, on_ready=_announce, chat_template=template)
        run.final_metrics.update(totals)
        n = totals["requests"]
        run.set_summary(
            f"served {name}: {n} request{'s' * (n != 1)}, "
            f"{totals['completion_tokens']} tokens generated"
        )
    return 0


def _announce(server) -> None:
    if server.config.host not in LOOPBACK and server.config.api_key is None:
        print(
            f"warning: listening on {server.config.host} without --api-key: anyone who can "
            "reach this machine can use the model",
            file=sys.stderr,
        )
    print(f"serving {server.model_name} at {server.url} (Ctrl-C stops)", flush=True)


def _without_key(argv: list[str]) -> list[str]:
    """The command line as recorded with the run, with the API key's value masked
    (argparse also takes an abbreviation such as --api-k)."""
    out, mask_next = [], False
    for arg in argv:
        option, eq, _ = arg.partition("=")
        is_key = len(option) > 2 and "--api-key".startswith(option)
        if mask_next:
            out.append("***")
            mask_next = False
        elif is_key and eq:
            out.append(f"{option}=***")
        else:
            out.append(arg)
            mask_next = is_key
    return out
