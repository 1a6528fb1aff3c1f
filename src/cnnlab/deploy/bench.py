"""`cnnlab bench`: latency, throughput, memory, efficiency and energy per model and batch.

What is measured, and how:

- latency per batch: ``warmup`` untimed runs, then ``iters`` timed ones (CUDA events on a GPU,
  ``perf_counter`` on a CPU); median, p90 and p99 of those. images/s = batch / median.
- peak memory: the CUDA allocator's peak on a GPU; on a CPU the growth of the process's peak
  RSS over the run (Linux's VmHWM, reset through /proc/self/clear_refs where allowed).
- work: MACs per image from the analyser (:func:`cnnlab.analysis.summarize`), FLOP = 2 MAC;
  training counts 3x the forward (backward ~ 2x forward). Achieved GFLOP/s is compared with a
  square-matrix GEMM peak measured on the same device, in the same dtype, in the same run.
- energy: the NVML total-energy counter on NVIDIA GPUs, the RAPL powercap counter on CPUs that
  expose it, over a window of at least one second; "not available" otherwise. RAPL measures
  the whole package, so other processes' work is included.
- a batch that runs out of memory backs off to the next smaller batch, and the row says so.
"""

from __future__ import annotations

import contextlib
import copy
import csv
import io
import math
import os
import resource
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

__all__ = [
    "BenchConfig",
    "BenchRow",
    "CSV_COLUMNS",
    "bench",
    "gemm_peak_gflops",
    "rows_to_csv",
]

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
MIN_ENERGY_WINDOW_S = 1.0


@dataclass(frozen=True)
class BenchConfig:
    """What to measure; the CLI's options one to one."""

    batches: tuple[int, ...] = (1, 8, 32)
    input_size: tuple[int, int, int] | None = None  # default: the model's paper size
    device: str = "cpu"
    fuse: bool = False
    channels_last: bool = False
    compile: bool = False
    onnxruntime: bool = False
    dtype: str = "fp32"
    mode: str = "infer"  # "infer" | "train"
    warmup: int = 3
    iters: int = 10
    gemm_size: int | None = None  # n of the n x n x n GEMM peak (default 1024 CPU, 8192 GPU)

    @property
    def variant(self) -> str:
        parts = [name for name, on in (("fused", self.fuse), ("channels_last", self.channels_last),
                                       ("compiled", self.compile), ("onnxruntime",
                                                                   self.onnxruntime)) if on]
        return "+".join(parts) or "eager"


@dataclass
class BenchRow:
    """One model at one batch. The first seven fields are timm's benchmark CSV columns."""

    model: str
    img_size: int
    batch: int
    samples_per_sec: float
    step_time_ms: float  # median time of one batch
    param_count: float  # millions, as timm writes it
    gmacs: float  # per image
    p50_ms: float
    p90_ms: float
    p99_ms: float
    peak_mem_mb: float
    pct_of_peak: float
    joules_per_img: float | None
    variant: str
    gflops_per_s: float
    gemm_peak_gflops: float
    device: str
    dtype: str
    mode: str
    warmup: int
    iters: int
    memory_source: str
    energy_source: str
    note: str = ""


CSV_COLUMNS = [f.name for f in fields(BenchRow)]


@dataclass
class BenchResult:
    rows: list[BenchRow]
    meta: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {"meta": self.meta, "rows": [asdict(r) for r in self.rows]}


def rows_to_csv(rows: Sequence[BenchRow]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: ("not available" if v is None else v) for k, v in asdict(row).items()})
    return buffer.getvalue()


# --- clocks, memory, energy -------------------------------------------------------------------


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _time_runs(fn: Callable[[], Any], device: torch.device, iters: int) -> list[float]:
    """Milliseconds of each of ``iters`` calls (CUDA events on a GPU)."""
    times = []
    for _ in range(iters):
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end))
        else:
            t0 = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t0) * 1e3)
    return times


def _percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    k = (len(ordered) - 1) * q / 100
    lo, hi = math.floor(k), math.ceil(k)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


class _Memory:
    """Peak memory of one measured block: CUDA allocator, or process peak-RSS growth on CPU."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.source = "cuda allocator peak" if device.type == "cuda" else "peak RSS growth"

    @contextlib.contextmanager
    def measure(self) -> Iterator[dict[str, float]]:
        box: dict[str, float] = {}
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
            base = torch.cuda.memory_allocated(self.device)
            yield box
            box["mb"] = (torch.cuda.max_memory_allocated(self.device) - base) / 2**20
            return
        base = self._reset_hwm()
        yield box
        box["mb"] = max(0.0, self._peak_kb() - base) / 1024

    def _reset_hwm(self) -> float:
        """Reset the peak-RSS mark where Linux allows; return the baseline to subtract (KB)."""
        try:
            Path("/proc/self/clear_refs").write_text("5")
            self.source = "peak RSS growth (VmHWM)"
            return self._status_kb("VmRSS")
        except OSError:
            self.source = "peak RSS growth (ru_maxrss; 0 when below an earlier peak)"
            return self._peak_kb()

    def _peak_kb(self) -> float:
        hwm = self._status_kb("VmHWM")
        if hwm:
            return hwm
        scale = 1 / 1024 if sys.platform == "darwin" else 1  # bytes on macOS, KB on Linux
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale

    @staticmethod
    def _status_kb(key: str) -> float:
        with contextlib.suppress(OSError):
            for line in Path("/proc/self/status").read_text().splitlines():
                if line.startswith(key + ":"):
                    return float(line.split()[1])
        return 0.0


class _Energy:
    """A cumulative energy counter in joules, or None when the hardware exposes none."""

    def __init__(self, device: torch.device) -> None:
        self.read: Callable[[], float] | None = None
        self.source = "not available"
        if device.type == "cuda":
            self._nvml(device)
        else:
            self._rapl()

    def _nvml(self, device: torch.device) -> None:
        try:
            import pynvml

            pynvml.nvmlInit()
            handle = pynvml.nvmlDeviceGetHandleByIndex(device.index or 0)
            pynvml.nvmlDeviceGetTotalEnergyConsumption(handle)  # millijoules; raises if absent
        except Exception:  # no pynvml, no NVML, or a GPU without the counter
            return
        self.read = lambda: pynvml.nvmlDeviceGetTotalEnergyConsumption(handle) / 1e3
        self.source = "NVML total energy"

    def _rapl(self) -> None:
        zones = sorted(Path("/sys/class/powercap").glob("intel-rapl:[0-9]"))
        zones += sorted(Path("/sys/class/powercap").glob("amd-rapl:[0-9]"))
        try:
            counters = [(z / "energy_uj", float((z / "max_energy_range_uj").read_text()))
                        for z in zones]
            [float(c.read_text()) for c, _ in counters]
        except (OSError, ValueError):
            return
        if not counters:
            return
        self._last = [float(c.read_text()) for c, _ in counters]
        self._total = 0.0

        def read() -> float:  # RAPL wraps at max_energy_range_uj
            now = [float(c.read_text()) for c, _ in counters]
            for i, (value, (_, wrap)) in enumerate(zip(now, counters, strict=True)):
                self._total += (value - self._last[i]) % wrap
            self._last = now
            return self._total / 1e6

        self.read = read
        self.source = "RAPL package energy (includes other processes)"


# --- the GEMM peak ----------------------------------------------------------------------------


def gemm_peak_gflops(device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32,
                     n: int | None = None, repeats: int = 5) -> float:
    """The best GFLOP/s of an n x n x n matrix product (2 n^3 FLOP) on ``device``: the roof the
    models' achieved GFLOP/s is compared with."""
    device = torch.device(device)
    n = n or (8192 if device.type == "cuda" else 1024)
    a = torch.randn(n, n, device=device).to(dtype)
    b = torch.randn(n, n, device=device).to(dtype)
    torch.mm(a, b)
    _sync(device)
    best = min(_time_runs(lambda: torch.mm(a, b), device, repeats))
    return 2 * n**3 / (best / 1e3) / 1e9


# --- one model --------------------------------------------------------------------------------


def _is_oom(exc: BaseException) -> bool:
    if isinstance(exc, (torch.OutOfMemoryError, MemoryError)):
        return True
    return isinstance(exc, RuntimeError) and (
        "out of memory" in str(exc) or "can't allocate memory" in str(exc)
    )


def _prepare(model: nn.Module, cfg: BenchConfig, size: tuple[int, int, int],
             device: torch.device) -> Callable[[torch.Tensor], Any]:
    """The callable to time: the model as the variant asks (fused, channels-last, ...)."""
    if cfg.onnxruntime:
        return _onnx_runner(model, cfg, size)
    if cfg.mode == "train":
        model = model.to(device).train()
        optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
        if cfg.channels_last:
            model = model.to(memory_format=torch.channels_last)
        if cfg.compile:
            model = torch.compile(model)

        def step(x: torch.Tensor) -> None:
            optimizer.zero_grad(set_to_none=True)
            with _autocast(device, cfg.dtype):
                out = model(x)
                logits = out[0] if isinstance(out, tuple) else out
            logits.float().logsumexp(1).mean().backward()
            optimizer.step()

        return step
    model = model.to(device).eval()
    if cfg.fuse:
        from cnnlab.deploy.fuse import optimize_for_inference

        model = optimize_for_inference(model, channels_last=cfg.channels_last,
                                       compile=cfg.compile)
    else:
        if cfg.channels_last:
            model = model.to(memory_format=torch.channels_last)
        if cfg.compile:
            model = torch.compile(model)

    @torch.no_grad()
    def infer(x: torch.Tensor) -> torch.Tensor:
        with _autocast(device, cfg.dtype):
            return model(x)

    return infer


def _autocast(device: torch.device, dtype: str) -> contextlib.AbstractContextManager:
    if dtype == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=DTYPES[dtype])


def _onnx_runner(model: nn.Module, cfg: BenchConfig,
                 size: tuple[int, int, int]) -> Callable[[torch.Tensor], Any]:
    if cfg.mode == "train" or cfg.device != "cpu" or cfg.dtype != "fp32":
        raise ValueError("the onnxruntime variant benchmarks fp32 inference on the CPU only")
    import onnxruntime as ort

    from cnnlab.deploy.exporter import export
    from cnnlab.deploy.fuse import fuse_bn

    if cfg.fuse:
        model, _ = fuse_bn(model)
    with tempfile.TemporaryDirectory() as tmp:
        path = export(model, Path(tmp) / "model.onnx", "onnx", size).path
        options = ort.SessionOptions()
        options.intra_op_num_threads = torch.get_num_threads()
        session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return lambda x: session.run(None, {name: x.numpy()})


def _input(batch: int, size: tuple[int, int, int], cfg: BenchConfig,
           device: torch.device) -> torch.Tensor:
    x = torch.randn(batch, *size, device=device)
    if cfg.channels_last and not cfg.onnxruntime:
        x = x.contiguous(memory_format=torch.channels_last)
    return x


def _measure(run: Callable[[torch.Tensor], Any], x: torch.Tensor, cfg: BenchConfig,
             device: torch.device, memory: _Memory,
             energy: _Energy) -> tuple[list[float], float, float | None]:
    """Timed runs, peak memory (MB) and joules per image of one batch."""
    with memory.measure() as mem:
        for _ in range(cfg.warmup):
            run(x)
        _sync(device)
        times = _time_runs(lambda: run(x), device, cfg.iters)
    joules = None
    if energy.read is not None:
        # Enough further runs for a window of at least a second: counters tick coarsely.
        count, start_j, t0 = 0, energy.read(), time.perf_counter()
        while time.perf_counter() - t0 < MIN_ENERGY_WINDOW_S or count < cfg.iters:
            run(x)
            count += 1
        _sync(device)
        joules = (energy.read() - start_j) / (count * x.shape[0])
    return times, mem["mb"], joules


def _work(model: nn.Module, size: tuple[int, int, int]) -> tuple[int, int]:
    """(MACs per image from the analyser, parameter count)."""
    from cnnlab.analysis import summarize

    summary = summarize(model, size)
    return summary.total_macs, sum(p.numel() for p in model.parameters())


def _sig(value: float) -> float:
    return float(f"{value:.4g}")


def resolve_size(model: nn.Module, size: tuple[int, int, int] | None) -> tuple[int, int, int]:
    from cnnlab.deploy.exporter import resolve_input_size

    return resolve_input_size(model, size)


def bench_model(model: nn.Module, cfg: BenchConfig, peak: float,
                log: Callable[[str], None] = lambda _: None) -> list[BenchRow]:
    """Rows for one model, one per batch in ``cfg.batches`` (smaller when memory runs out)."""
    if cfg.mode not in ("infer", "train"):
        raise ValueError(f"mode must be infer or train, got {cfg.mode!r}")
    if cfg.mode == "train" and cfg.fuse:
        raise ValueError("--fuse folds BN for inference; it does not apply to --mode train")
    if cfg.dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {', '.join(DTYPES)}, got {cfg.dtype!r}")
    device = torch.device(cfg.device)
    name = getattr(model, "model_name", type(model).__name__)
    size = resolve_size(model, cfg.input_size)
    macs, params = _work(model, size)
    flops_per_img = 2 * macs * (3 if cfg.mode == "train" else 1)
    run = _prepare(copy.deepcopy(model), cfg, size, device)
    memory, energy = _Memory(device), _Energy(device)
    rows: list[BenchRow] = []
    pending = sorted(set(cfg.batches), reverse=True)
    notes: dict[int, str] = {}
    while pending:
        batch = pending.pop(0)
        try:
            times, mem_mb, joules = _measure(run, _input(batch, size, cfg, device), cfg, device,
                                             memory, energy)
        except Exception as exc:
            if not _is_oom(exc):
                raise
            if device.type == "cuda":
                torch.cuda.empty_cache()
            smaller = pending[0] if pending else batch // 2
            if smaller >= 1:
                msg = f"batch {batch} ran out of memory; backed off to {smaller}"
                if not pending:
                    pending.insert(0, smaller)
                notes[smaller] = msg
            else:
                msg = f"batch {batch} ran out of memory; nothing smaller to try"
            log(f"{name}: {msg}")
            continue
        median = statistics.median(times)
        achieved = flops_per_img * batch / (median / 1e3) / 1e9
        rows.append(BenchRow(
            model=name, img_size=size[1], batch=batch,
            samples_per_sec=round(batch / (median / 1e3), 2), step_time_ms=round(median, 3),
            param_count=round(params / 1e6, 3), gmacs=float(f"{macs / 1e9:.4g}"),
            p50_ms=round(median, 3), p90_ms=round(_percentile(times, 90), 3),
            p99_ms=round(_percentile(times, 99), 3), peak_mem_mb=round(mem_mb, 1),
            pct_of_peak=_sig(100 * achieved / peak), gflops_per_s=_sig(achieved),
            joules_per_img=None if joules is None else round(joules, 4),
            variant=cfg.variant, gemm_peak_gflops=round(peak, 1), device=str(device),
            dtype=cfg.dtype, mode=cfg.mode, warmup=cfg.warmup, iters=cfg.iters,
            memory_source=memory.source, energy_source=energy.source,
            note=notes.get(batch, ""),
        ))
        log(f"{name} batch {batch}: {rows[-1].samples_per_sec} img/s")
    return sorted(rows, key=lambda r: r.batch)


def bench(models: Sequence[nn.Module], cfg: BenchConfig,
          log: Callable[[str], None] = lambda _: None) -> BenchResult:
    """Benchmark each model under ``cfg``; the GEMM peak is measured once, first."""
    device = torch.device(cfg.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda asked for, but no CUDA device is available")
    peak = gemm_peak_gflops(device, DTYPES[cfg.dtype], n=cfg.gemm_size)
    rows = [row for model in models for row in bench_model(model, cfg, peak, log)]
    meta = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "threads": torch.get_num_threads(), "torch": torch.__version__,
        "gemm_peak_gflops": round(peak, 1), "variant": cfg.variant, "config": asdict(cfg),
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "flop_convention": "FLOP = 2 x MAC (analyser); training = 3 x forward",
    }
    return BenchResult(rows, meta)
