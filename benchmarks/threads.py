"""Does `--threads 1` beat torch's default on a machine shared with other jobs?

Claim: when other processes keep the cores busy, one torch thread trains faster than one
thread per core, because torch's threads wait for each other at every operator and each
wait is as long as the slowest, descheduled, thread. This times the same training steps
(forward, backward, SGD step; resnet20 on a 128-image CIFAR-sized batch) at each thread
count, alternating the counts so both see the same load, and prints the load average.

    PYTHONPATH=src python benchmarks/threads.py             # threads 1 and os.cpu_count()
    PYTHONPATH=src python benchmarks/threads.py --steps 5 --rounds 1   # smoke run
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import torch

from cnnlab import create_model


def steps_per_second(model: torch.nn.Module, threads: int, steps: int) -> float:
    torch.set_num_threads(threads)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    x, y = torch.randn(128, 3, 32, 32), torch.randint(0, 10, (128,))
    loss_fn = torch.nn.CrossEntropyLoss()
    loss_fn(model(x), y).backward()  # warm-up
    start = time.perf_counter()
    for _ in range(steps):
        opt.zero_grad()
        loss_fn(model(x), y).backward()
        opt.step()
    return steps / (time.perf_counter() - start)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="resnet20")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    torch.manual_seed(0)
    model = create_model(args.model)
    counts = sorted({1, os.cpu_count() or 1})
    rates: dict[int, list[float]] = {n: [] for n in counts}
    for _ in range(args.rounds):
        for n in counts:
            rates[n].append(steps_per_second(model, n, args.steps))
    load = os.getloadavg()
    print(f"{args.model}, batch 128 at 3x32x32, {args.steps} steps x {args.rounds} rounds; "
          f"{os.cpu_count()} cores, load average {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f}")
    for n in counts:
        print(f"  {n} thread(s): {statistics.median(rates[n]):.2f} steps/s (median)")
    if len(counts) > 1:
        ratio = statistics.median(rates[1]) / statistics.median(rates[counts[-1]])
        print(f"  1 thread / {counts[-1]} threads: {ratio:.2f}x")


if __name__ == "__main__":
    main()
