"""``ssnet-eval-bag --ray``: evaluate many bags on a Ray cluster, one bag per unit of work.

Each worker is a Ray actor holding one Segmenter, so the model loads once per worker, not per
bag: one worker per GPU with CUDA, else one per ``--threads`` CPU slots (``--threads 0``: one
slot and one thread per worker). The driver hands every worker one bag at a time, counts the
frames of all bags on one progress bar, retries a bag whose worker died (``--retries``), and
merges the per-bag results into the report of the sequential run
(:func:`ssnet_ros.bags.evaluator.build_report`), so the metrics are the same numbers.

The workers write every output under ``--out``, which must therefore be a folder all of them
see (a shared filesystem): the output bag (atomically, by BagWriter), its pictures (atomically)
and, last, ``<bag name>.result.json``, the bag's BagResult, which marks it complete: ``--resume``
takes complete bags from it instead of evaluating them again.

Ray is imported only inside functions: the package works without it (``pip install .[ray]``).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import sys
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from ..core.drivable import DrivableRule
from ..core.fileio import atomic_path, write_json, write_png, write_text
from ..core.segmenter import Segmenter
from ..errors import SSNetError
from .bagfile import BagReader, image_topic
from .evaluator import (BagResult, EvalOptions, build_report, check_run, evaluate_bag,
                        report_markdown, write_trust_scatter)

RESULT_SUFFIX = ".result.json"
"""``<out>/<bag name>.result.json``: written last by the worker; the bag is complete."""
POLL_S = 0.2
"""How often the driver looks at finished bags and updates the progress bar."""


@dataclass(frozen=True)
class RayOptions:
    """How to run ssnet-eval-bag on Ray (its --ray, --retries, --resume and model options)."""

    address: str = "local"
    """local: start a Ray instance on this machine; auto: the running cluster; ray://..."""
    weights: str | Path | None = None
    device: str = "auto"
    precision: str = "auto"
    input_size: tuple[int, int] | None = None
    drivable_classes: Sequence[str] | None = None
    drivable_rule: DrivableRule | None = None
    """None: the Segmenter's default (the measured defaults)."""
    threads: int = 0
    """CPU slots (num_cpus) and torch threads per worker; 0: 1."""
    retries: int = 2
    """New attempts at a bag whose worker died; a bag that fails by itself is not retried."""
    resume: bool = False


def result_path(output: Path) -> Path:
    """The completion record of output bag ``output``."""
    return output.parent / f"{output.name}{RESULT_SUFFIX}"


def result_to_json(result: BagResult) -> dict[str, Any]:
    """``result`` as JSON values (without its pictures, which are files by then)."""
    data: dict[str, Any] = {}
    for f in dataclasses.fields(result):
        value = getattr(result, f.name)
        if f.name == "panels":
            continue
        if isinstance(value, Path):
            value = str(value)
        elif isinstance(value, np.ndarray):
            value = value.tolist()
        elif isinstance(value, tuple):
            value = list(value)
        data[f.name] = value
    return data


def result_from_json(data: dict[str, Any]) -> BagResult:
    """The BagResult that :func:`result_to_json` wrote."""
    values: dict[str, Any] = {}
    for f in dataclasses.fields(BagResult):
        if f.name not in data or f.name == "panels":
            continue
        value, kind = data[f.name], str(f.type)
        if value is not None:
            if kind.startswith("Path"):
                value = Path(value)
            elif kind.startswith("np.ndarray"):
                value = np.asarray(value, np.int64)
            elif kind.startswith("tuple"):
                value = tuple(value)
        values[f.name] = value
    return BagResult(**values)


def _save(result: BagResult, record: dict[str, Any]) -> None:
    """Write the bag's pictures, then its completion record (both atomically)."""
    folder = result.output.parent / f"{result.output.name}_panels"
    if result.panels:
        with atomic_path(folder) as tmp:
            tmp.mkdir()
            for name, pic in result.panels:
                write_png(tmp / name, pic)
            if folder.exists():
                shutil.rmtree(folder)
    record = {**record, "panels": [name for name, _ in result.panels]}
    result.panels = []
    write_json(result_path(result.output), {**record, "result": result_to_json(result)})


class FrameCounter:
    """A Ray actor: frames segmented so far per bag, summed for the driver's progress bar."""

    def __init__(self) -> None:
        self.frames: dict[int, int] = {}

    def add(self, key: int, frames: int) -> None:
        """Count ``frames`` more frames of bag ``key``."""
        self.frames[key] = self.frames.get(key, 0) + frames

    def reset(self, key: int) -> None:
        """Forget bag ``key``'s frames (its worker died; it starts again)."""
        self.frames.pop(key, None)

    def total(self) -> int:
        """Frames of all bags."""
        return sum(self.frames.values())


class BagWorker:
    """A Ray actor: one Segmenter, evaluating one bag at a time."""

    def __init__(self, spec: RayOptions, device: str) -> None:
        import torch

        torch.set_num_threads(max(1, spec.threads))
        self.segmenter = Segmenter(spec.weights, device=device, precision=spec.precision,
                                   input_size=spec.input_size,
                                   drivable_classes=spec.drivable_classes,
                                   drivable_rule=spec.drivable_rule)

    def describe(self) -> dict[str, Any]:
        """Where this worker runs its model."""
        return {"device": str(self.segmenter.device), "pid": os.getpid(),
                "precision": str(self.segmenter.dtype).removeprefix("torch.")}

    def evaluate(self, bag: str, output: str, options: EvalOptions, progress: Any, key: int,
                 record: dict[str, Any]) -> dict[str, Any]:
        """Evaluate ``bag`` into ``output`` and save it; {"result": BagResult} or, when the
        bag cannot be evaluated, {"failed": reason}."""
        def on_frames(frames: int) -> None:
            progress.add.remote(key, frames)

        try:
            result = evaluate_bag(self.segmenter, bag, output, options, on_frames)
            _save(result, {**record, "source": str(Path(bag).resolve()), **self.describe()})
        except SSNetError as exc:
            return {"failed": str(exc)}
        return {"result": result}


def _fingerprint(segmenter: Segmenter, options: EvalOptions, spec: RayOptions
                 ) -> dict[str, Any]:
    """What an earlier run must have used for --resume to take its bags (JSON values): the
    model options and every EvalOptions field but progress and overwrite."""
    data = {"weights": spec.weights, "precision": spec.precision,
            "input_size": spec.input_size, "drivable_ids": segmenter.drivable_ids}
    data |= {f.name: getattr(options, f.name) for f in dataclasses.fields(options)
             if f.name not in ("progress", "overwrite")}
    return json.loads(json.dumps(data, default=str))


def completed(bag: Path, output: Path, fingerprint: dict[str, Any]) -> dict[str, Any] | None:
    """The completion record of ``output`` when an earlier run finished ``bag`` there, else
    None; SSNetError when that run used other options."""
    path = result_path(output)
    if not path.is_file() or not (output / "metadata.yaml").is_file():
        return None
    try:
        record = json.loads(path.read_text())
        if record["source"] != str(bag.resolve()):
            return None
        result_from_json(record["result"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if record.get("options") != fingerprint:
        changed = sorted(k for k in fingerprint if record.get("options", {}).get(k)
                         != fingerprint[k])
        raise SSNetError(f"output {output} was made with other options ({', '.join(changed)}); "
                         f"--resume continues a run with the same options: use another --out "
                         f"or rerun with --overwrite")
    return record


def _frames_in(bag: Path, options: EvalOptions) -> int:
    """Frames the worker will read from ``bag`` (0 when the bag cannot be read here)."""
    try:
        with BagReader(bag) as reader:
            topic = image_topic(reader, options.topic,
                                [options.truth_topic] if options.truth_topic else [])
            count = reader.topics[topic].count or 0
    except SSNetError:
        return 0
    return count if options.limit is None else min(count, options.limit)


def _import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise SSNetError("--ray needs Ray: pip install 'ssnet_ros[ray]' (ray[client]==2.60.0)"
                         ) from None
    return ray


def connect(address: str) -> tuple[Any, bool]:
    """The ray module, initialised for ``address`` (local, auto or ray://HOST:PORT), and
    whether this call started it (then the caller shuts it down). An initialised Ray (e.g. a
    test's) is used as it is."""
    ray = _import_ray()
    if ray.is_initialized():
        return ray, False
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    kwargs: dict[str, Any] = {"log_to_driver": False, "logging_level": logging.ERROR}
    if address == "local":
        kwargs["include_dashboard"] = False
    try:
        ray.init(address=address, **kwargs)
    except ImportError as exc:  # a ray:// address needs the Ray client (grpcio)
        raise SSNetError(f"cannot reach Ray at {address}: {exc}; install the extra: "
                         f"pip install 'ssnet_ros[ray]' (ray[client]==2.60.0)") from None
    except (ConnectionError, RuntimeError, ValueError) as exc:
        raise SSNetError(f"cannot start or reach Ray at {address}: "
                         f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}"
                         ) from None
    return ray, True


def _reason(exc: BaseException) -> str:
    """One line for a Ray error: the worker's exception, or how the worker died."""
    import re

    cause = getattr(exc, "cause", None)
    if isinstance(cause, BaseException) and not isinstance(cause, type(exc)):
        exc = cause
    full = str(exc)
    lines = [line.strip() for line in full.splitlines() if line.strip()]
    text = lines[0] if lines else ""
    dead = re.search(r"The actor is dead because [^.]*\.", full)
    if dead:  # Ray's actor-death message: keep why, the process and its exit type
        text = f"{text} {dead.group(0)}"
        facts = [f"{key} {m.group(1)}" for key, pattern in
                 (("pid", r"\bpid: (\d+)"), ("exit type", r"Worker exit type: (\w+)"))
                 if (m := re.search(pattern, full))]
        text += f" ({', '.join(facts)})" if facts else ""
    return f"{type(exc).__name__}: {text[:300]}"


class _Pool:
    """The workers and the frame counter of one run."""

    def __init__(self, ray: Any, spec: RayOptions) -> None:
        self.ray, self.spec = ray, spec
        self.threads = max(1, spec.threads)
        resources = ray.cluster_resources()
        self.gpus = 1 if spec.device.startswith("cuda") or (
            spec.device == "auto" and resources.get("GPU", 0) >= 1) else 0
        if self.gpus:
            self.size = int(resources.get("GPU", 0))
            if self.size < 1:
                raise SSNetError(f"--device {spec.device} but the Ray cluster has no GPU")
        else:
            self.size = max(1, int(resources.get("CPU", 1)) // self.threads)
        self.device = "cuda" if self.gpus else "cpu"
        self.actor = ray.remote(num_cpus=self.threads, num_gpus=self.gpus,
                                max_restarts=0)(BagWorker)
        self.counter = ray.remote(num_cpus=0)(FrameCounter).remote()
        self.workers: list[Any] = []

    def start(self, n: int) -> list[dict[str, Any]]:
        """Start ``n`` workers; what each says of itself (SSNetError if none can start)."""
        self.workers = [self.actor.remote(self.spec, self.device) for _ in range(n)]
        try:
            return self.ray.get([w.describe.remote() for w in self.workers])
        except self.ray.exceptions.RayError as exc:
            raise SSNetError(f"the Ray workers could not load the model: {_reason(exc)}"
                             ) from None

    def replace(self, slot: int) -> None:
        """A new worker in place of the dead one in ``slot``."""
        try:
            self.ray.kill(self.workers[slot], no_restart=True)
        except Exception:  # noqa: BLE001 - it is dead already
            pass
        self.workers[slot] = self.actor.remote(self.spec, self.device)

    def close(self) -> None:
        """End the workers and the counter now, freeing their CPU and GPU slots."""
        for actor in [*self.workers, self.counter]:
            try:
                self.ray.kill(actor, no_restart=True)
            except Exception:  # noqa: BLE001 - already gone
                pass
        self.workers = []


def _transient(ray: Any) -> tuple[type[BaseException], ...]:
    """Ray errors that mean the worker (process, node, object) died, not the bag."""
    ex = ray.exceptions
    return tuple(getattr(ex, name) for name in (
        "RayActorError", "WorkerCrashedError", "NodeDiedError", "ObjectLostError",
        "OutOfMemoryError", "LocalRayletDiedError") if hasattr(ex, name))


def _schedule(ray: Any, pool: _Pool, todo: list[int], bags: list[Path], outputs: list[Path],
              options: EvalOptions, record: dict[str, Any], bar: tqdm
              ) -> tuple[dict[int, BagResult], dict[int, str], dict[int, list[str]],
                         dict[int, int]]:
    """Evaluate bags ``todo`` on the pool's workers: (results, failures, retry reasons,
    attempts)."""
    done: dict[int, BagResult] = {}
    failed: dict[int, str] = {}
    retried: dict[int, list[str]] = {}
    transient = _transient(ray)
    worker_options = dataclasses.replace(options, progress=False, overwrite=True)
    pending, attempts = deque(todo), dict.fromkeys(todo, 0)
    running: dict[Any, tuple[int, int]] = {}  # ObjectRef -> (worker slot, bag)
    idle = list(range(len(pool.workers)))[::-1]
    base, shown = bar.n, bar.n
    while pending or running:
        while pending and idle:
            slot, i = idle.pop(), pending.popleft()
            attempts[i] += 1
            ref = pool.workers[slot].evaluate.remote(  # absolute: workers have another cwd
                str(bags[i].resolve()), str(outputs[i].resolve()), worker_options,
                pool.counter, i, record)
            running[ref] = (slot, i)
        ready, _ = ray.wait(list(running), num_returns=1, timeout=POLL_S)
        for ref in ready:
            slot, i = running.pop(ref)
            try:
                answer = ray.get(ref)
            except transient as exc:
                reason = _reason(exc)
                retried.setdefault(i, []).append(reason)
                pool.replace(slot)
                ray.get(pool.counter.reset.remote(i))
                if attempts[i] <= pool.spec.retries:
                    pending.appendleft(i)
                else:
                    failed[i] = (f"its worker died on each of {attempts[i]} attempts; "
                                 f"the last: {reason}")
                answer = None
            except ray.exceptions.RayTaskError as exc:  # the bag's own error: not retried
                answer = {"failed": _reason(exc)}
            idle.append(slot)
            if answer is None:
                continue
            if "failed" in answer:
                failed[i] = answer["failed"]
            else:
                done[i] = answer["result"]
                done[i].path, done[i].output = bags[i], outputs[i]  # as given, as in run()
        frames = base + ray.get(pool.counter.total.remote())
        if frames != shown:
            bar.n = shown = frames
            bar.refresh()
    return done, failed, retried, attempts


def run_on_ray(bags: Sequence[str | Path], out: str | Path, options: EvalOptions,
               spec: RayOptions) -> dict[str, Any]:
    """Evaluate ``bags`` on Ray workers: the outputs, report.json and report.md of
    :func:`ssnet_ros.bags.evaluate.run`, plus ``retried_bags``, ``resumed_bags`` and ``ray``."""
    out = Path(out)
    if spec.retries < 0:
        raise SSNetError(f"--retries must be >= 0, got {spec.retries}")
    bags_, outputs, truth = check_run(bags, out, options, resume=spec.resume)
    # the driver's copy of the model, on the CPU: the card and names for the report
    driver = Segmenter(spec.weights, device="cpu", precision="fp32", input_size=spec.input_size,
                       drivable_classes=spec.drivable_classes, warmup=False,
                       drivable_rule=spec.drivable_rule)
    spec = dataclasses.replace(spec, weights=str(Path(driver.weights).resolve())
                               if driver.weights else None)
    if options.truth_dir is not None:
        options = dataclasses.replace(options, truth_dir=options.truth_dir.resolve())
    fingerprint = _fingerprint(driver, options, spec)
    records: dict[int, dict[str, Any]] = {}
    if spec.resume:
        for i, (bag, output) in enumerate(zip(bags_, outputs)):
            record = completed(bag, output, fingerprint)
            if record is not None:
                records[i] = record
    results = {i: result_from_json(r["result"]) for i, r in records.items()}
    for i, result in results.items():
        result.path, result.output = bags_[i], outputs[i]
    todo = [i for i in range(len(bags_)) if i not in results]
    failed: dict[int, str] = {}
    retried: dict[int, list[str]] = {}
    attempts: dict[int, int] = {}
    info: dict[str, Any] = {"address": spec.address, "workers": 0, "startup_seconds": 0.0}
    devices = {(r["device"], r["precision"]) for r in records.values()}
    seconds = 0.0
    if todo:
        t0 = time.perf_counter()
        ray, started = connect(spec.address)
        pool = None
        try:
            pool = _Pool(ray, spec)
            described = pool.start(min(pool.size, len(todo)))
            devices |= {(d["device"], d["precision"]) for d in described}
            info.update(workers=len(described), threads_per_worker=pool.threads,
                        gpus_per_worker=pool.gpus, startup_seconds=time.perf_counter() - t0)
            total = sum(results[i].frames for i in results) + \
                sum(_frames_in(bags_[i], options) for i in todo)
            bar = tqdm(total=total, initial=sum(r.frames for r in results.values()),
                       desc=f"segment {len(bags_)} bags on {len(described)} Ray workers",
                       unit="frame", disable=not options.progress, file=sys.stderr)
            t1 = time.perf_counter()
            done, failed, retried, attempts = _schedule(
                ray, pool, todo, bags_, outputs, options, {"options": fingerprint}, bar)
            seconds = time.perf_counter() - t1
            bar.close()
        finally:
            if pool is not None:
                pool.close()
            if started:
                ray.shutdown()
        results.update(done)
    if not results:
        raise SSNetError("no bag could be evaluated: " + "; ".join(
            f"{bags_[i]}: {reason}" for i, reason in sorted(failed.items())))
    ordered = [results[i] for i in sorted(results)]
    report = build_report(ordered, driver, options, seconds, spec.input_size, truth)
    if devices:
        report["device"] = ", ".join(sorted({d for d, _ in devices}))
        report["precision"] = ", ".join(sorted({p for _, p in devices}))
    report["failed_bags"] = [{"bag": str(bags_[i]), "reason": reason}
                             for i, reason in sorted(failed.items())]
    report["retried_bags"] = [{"bag": str(bags_[i]), "attempts": attempts[i],
                               "reasons": reasons, "completed": i in results}
                              for i, reasons in sorted(retried.items())]
    report["resumed_bags"] = [str(bags_[i]) for i in sorted(records)]
    report["ray"] = info
    write_json(out / "report.json", report)
    write_text(out / "report.md", report_markdown(report))
    write_trust_scatter(out, ordered)
    return report
