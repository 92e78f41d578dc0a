"""Benchmark: are reward channels scored in parallel? Four ``http`` channels against a slow judge.

A local HTTP judge on 127.0.0.1 answers every request after a fixed delay. Four
``http`` channels, each its own RewardWorker actor on Ray, score the same batch
through :func:`mixgrpo.orchestrator.scoring.score_all_channels`. Printed per
round: the wall time of the whole scoring call, the slowest channel's own time
(as its worker measured it), their ratio (target <= 1.2: the channels overlap)
and the serial time (the sum of the channels' times: what scoring one channel
after another would take).

Run from the repository root::

    python -m benchmarks.bench_http_channels [--delay 1.0] [--channels 4] [--rounds 5]
"""

from __future__ import annotations

import argparse
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import ray

from mixgrpo.actors.reward import RewardWorker
from mixgrpo.batch import PromptBatch, RolloutBatch
from mixgrpo.config import RewardChannelConfig
from mixgrpo.orchestrator.placement import remote_class
from mixgrpo.orchestrator.scoring import score_all_channels

TARGET = 1.2


def start_judge(delay_s: float) -> ThreadingHTTPServer:
    """A judge that sleeps ``delay_s`` and then scores each item by its completion's length."""

    class Judge(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
            items = json.loads(self.rfile.read(int(self.headers["Content-Length"])))["items"]
            time.sleep(delay_s)
            body = json.dumps({"scores": [float(len(item["completion"])) for item in items]}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    class Server(ThreadingHTTPServer):
        request_queue_size = 128  # the default listen backlog of 5 dropped connections of 16 channels at once:
        # the kernel retried them after 1 s (TCP's initial retransmission timeout), a step of 1.1 s

    server = Server(("127.0.0.1", 0), Judge)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def make_batch(prompts: int = 8, group: int = 8) -> tuple[PromptBatch, RolloutBatch]:
    """P prompts x m completions of different lengths."""
    n = prompts * group
    return (
        PromptBatch(np.arange(prompts, dtype=np.int64), [f"prompt {i}" for i in range(prompts)],
                    [{"i": i} for i in range(prompts)]),
        RolloutBatch(
            prompt_index=np.repeat(np.arange(prompts, dtype=np.int64), group),
            prompt_token_ids=[np.arange(4, dtype=np.int64)] * n,
            completion_token_ids=[np.arange(3, dtype=np.int64)] * n,
            behaviour_logprobs=[np.zeros(3, dtype=np.float32)] * n,
            completion_text=["x" * (i % 7) for i in range(n)],
            policy_version=np.zeros(n, dtype=np.int64),
        ),
    )


def main() -> None:
    """Start Ray and the judge, score ``--rounds`` times, print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--delay", type=float, default=1.0, help="judge delay per request, seconds (default 1.0)")
    parser.add_argument("--channels", type=int, default=4, help="http channels (default 4)")
    parser.add_argument("--rounds", type=int, default=5, help="measured rounds after one warm-up (default 5)")
    args = parser.parse_args()
    server = start_judge(args.delay)
    url = f"http://127.0.0.1:{server.server_address[1]}/score"
    channels = [RewardChannelConfig(name=f"judge{i}", kind="http", timeout_s=30 + 2 * args.delay,
                                    options={"url": url, "request_timeout_s": 10 + 2 * args.delay})
                for i in range(args.channels)]
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        remote = remote_class(RewardWorker)
        workers = [remote.options(num_cpus=0.1).remote(channel) for channel in channels]
        prompts, rollouts = make_batch()
        score_all_channels(workers, channels, prompts, rollouts)  # warm-up: actors up, imports done
        ratios = []
        print(f"{args.channels} http channels, judge delay {args.delay:.2f}s, {len(rollouts)} completions")
        print("round   wall s   slowest s   wall/slowest   serial s")
        for round_index in range(args.rounds):
            started = time.monotonic()
            scores = score_all_channels(workers, channels, prompts, rollouts)
            wall = time.monotonic() - started
            assert not np.isnan(scores.rewards).any(), "a channel returned nulls"
            slowest, serial = max(scores.seconds.values()), sum(scores.seconds.values())
            ratios.append(wall / slowest)
            print(f"{round_index + 1:>5}   {wall:6.3f}   {slowest:9.3f}   {wall / slowest:12.3f}   {serial:8.3f}")
        best, median = min(ratios), float(np.median(ratios))
        verdict = "PASS" if median <= TARGET else "MISS"
        print(f"wall / slowest channel: median {median:.3f}, best {best:.3f} (target <= {TARGET}) {verdict}")
    finally:
        ray.shutdown()
        server.shutdown()


if __name__ == "__main__":
    main()
