"""ssnet-eval-bag --ray on a real local Ray cluster of two workers, with bags of real CamVid val
frames: the same metrics as the sequential run, a killed worker retried, --resume, and a corrupt
bag reported while the others complete.

The killed worker is a real one: the ground truth of bag b's last frame is a named pipe the
test holds open, so the worker evaluating b waits there, mid-bag (its first batch written and
counted); the test finds that process by its open pipe, kills it with SIGKILL and puts the real
label file in the pipe's place for the retry."""

from __future__ import annotations

import errno
import json
import logging
import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ssnet_ros import Segmenter
from ssnet_ros.bags import messages as bm
from ssnet_ros.bags.bagfile import BagReader
from ssnet_ros.bags.distributed import RayOptions, result_path, run_on_ray
from ssnet_ros.bags.evaluate import EvalOptions, main, run
from ssnet_ros.bags.make import make_bag

ray = pytest.importorskip("ray")

NET = (24, 32)
FRAMES = 3  # per bag
NAMES = ("a", "b", "c")
TRUTH = "/ground_truth/labels"


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread() -> Iterator[None]:
    """One intra-op thread in this process, as in the workers (--threads 1)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module", autouse=True)
def cluster() -> Iterator[None]:
    """One local Ray instance of two CPU slots (two workers) for the whole module."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # offline CI: no usage report
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             logging_level=logging.ERROR)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def drives(tmp_path_factory: pytest.TempPathFactory, camvid_root: Path) -> list[Path]:
    """Three bags of FRAMES consecutive CamVid val frames each, with their labels."""
    root = tmp_path_factory.mktemp("drives")
    names = sorted(p.name for p in (camvid_root / "val").iterdir())
    bags = []
    for k, name in enumerate(NAMES):
        images, labels = root / f"{name}_images", root / f"{name}_labels"
        images.mkdir()
        labels.mkdir()
        for frame in names[k * 20:k * 20 + FRAMES]:
            (images / frame).symlink_to(camvid_root / "val" / frame)
            (labels / frame).symlink_to(camvid_root / "valannot" / frame)
        make_bag(images, root / name, labels=labels, label_format="camvid", progress=False)
        bags.append(root / name)
    return bags


@pytest.fixture
def truth_dir(tmp_path: Path, drives: list[Path]) -> Path:
    """The label files of all bags' frames, as --truth-dir (CamVid format)."""
    folder = tmp_path / "truth"
    folder.mkdir()
    for bag in drives:
        for label in (bag.parent / f"{bag.name}_labels").iterdir():
            (folder / label.name).symlink_to(label.resolve())
    return folder


class KillMidBag:
    """Kill the Ray worker process evaluating bag ``bag`` mid-bag, once, from the test.

    The label file of the bag's last frame (after its first batch of 2) becomes a named pipe
    this thread holds open without writing, so the worker's read of it blocks. The thread
    finds the process that opened the pipe (/proc/PID/fd), checks it is a Ray worker, kills it
    with SIGKILL, then puts the real label file back, for the retry."""

    def __init__(self, truth: Path, bag: Path, timeout: float = 300.0) -> None:
        last = sorted((bag.parent / f"{bag.name}_labels").iterdir())[-1]
        self.pipe, self.real = truth.resolve() / last.name, last.resolve()
        self.pipe.unlink()
        os.mkfifo(self.pipe)
        self.killed: list[tuple[int, str]] = []  # (pid, command line)
        self.error: BaseException | None = None
        self._stop = threading.Event()
        self._deadline = time.monotonic() + timeout
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> KillMidBag:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        self._restore()
        if self.error is not None:
            raise self.error

    def _restore(self) -> None:
        tmp = self.pipe.with_suffix(".restore")
        if self.pipe.is_fifo():
            tmp.unlink(missing_ok=True)
            tmp.symlink_to(self.real)
            os.replace(tmp, self.pipe)

    def _readers(self) -> list[int]:
        """The processes other than this one with the pipe open."""
        found = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit() or int(entry.name) == os.getpid():
                continue
            try:
                fds = list((entry / "fd").iterdir())
                if any(os.readlink(fd) == str(self.pipe) for fd in fds):
                    found.append(int(entry.name))
            except OSError:  # gone, or not ours to read
                continue
        return found

    def _run(self) -> None:
        try:
            fd = None
            while fd is None:  # opening the writing end succeeds once a reader waits
                try:
                    fd = os.open(self.pipe, os.O_WRONLY | os.O_NONBLOCK)
                except OSError as exc:
                    if exc.errno != errno.ENXIO:
                        raise
                    if self._stop.is_set() or time.monotonic() > self._deadline:
                        return
                    time.sleep(0.01)
            try:
                readers: list[int] = []
                while not readers and time.monotonic() < self._deadline:
                    readers = self._readers()  # the reader's open may still be returning
                for pid in readers:
                    cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
                    os.kill(pid, signal.SIGKILL)
                    self.killed.append((pid, cmdline.decode(errors="replace")))
            finally:
                self._restore()
                os.close(fd)
        except BaseException as exc:  # noqa: BLE001 - raised in the test by __exit__
            self.error = exc


@pytest.fixture(scope="module")
def sequential(tmp_path_factory: pytest.TempPathFactory, drives: list[Path],
               ssnet_checkpoint_varied: Path) -> dict[str, Any]:
    segmenter = Segmenter(ssnet_checkpoint_varied, device="cpu", input_size=NET)
    return run(segmenter, drives, tmp_path_factory.mktemp("sequential"),
               EvalOptions(truth_topic=TRUTH, batch_size=2, progress=False), NET)


def cli_args(drives: list[Path], out: Path, weights: Path, width: int = NET[1],
             truth: Path | None = None) -> list[str]:
    """The command line; ground truth from the bags' topic, or from folder ``truth``."""
    given = ["--truth-topic", TRUTH] if truth is None else \
        ["--truth-dir", str(truth), "--label-format", "camvid"]
    return [*map(str, drives), "--out", str(out), "--ray", "--threads", "1", "--weights",
            str(weights), "--device", "cpu", "--input-height", str(NET[0]), "--input-width",
            str(width), *given, "--batch-size", "2", "--no-progress"]


def spec(weights: Path, **kw: Any) -> RayOptions:
    return RayOptions(weights=weights, device="cpu", input_size=NET, threads=1, **kw)


def options(truth: Path | None = None) -> EvalOptions:
    if truth is not None:
        return EvalOptions(truth_dir=truth, label_format="camvid", batch_size=2, progress=False)
    return EvalOptions(truth_topic=TRUTH, batch_size=2, progress=False)


def assert_killed_a_ray_worker(killer: KillMidBag) -> None:
    [(pid, cmdline)] = killer.killed  # once, and not this process
    assert pid != os.getpid() and "ray::" in cmdline, cmdline


def assert_same_metrics(report: dict[str, Any], sequential: dict[str, Any]) -> None:
    assert report["metrics"] == sequential["metrics"]
    assert report["confusion_matrix"] == sequential["confusion_matrix"]
    assert [b["metrics"] for b in report["bags"]] == [b["metrics"] for b in sequential["bags"]]
    assert [b["path"] for b in report["bags"]] == [b["path"] for b in sequential["bags"]]
    assert report["frames_scored"] == len(NAMES) * FRAMES


def assert_one_label_per_frame(out: Path) -> None:
    for name in NAMES:
        with BagReader(out / name) as reader:
            frames = [bm.stamp_ns(bm.deserialize(m.data, m.msgtype).header)
                      for m in reader.messages(["/camera/image_raw"])]
            labels = [bm.stamp_ns(bm.deserialize(m.data, m.msgtype).header)
                      for m in reader.messages(["/segmentation/labels"])]
        assert labels == frames and len(frames) == FRAMES
    assert not list(out.glob(".*partial*"))  # nothing half-written is left


def test_ray_reports_exactly_the_sequential_metrics(
        tmp_path: Path, drives: list[Path], sequential: dict[str, Any],
        ssnet_checkpoint_varied: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    code = main(cli_args(drives, out, ssnet_checkpoint_varied))
    assert code == 0, capsys.readouterr().err
    report = json.loads((out / "report.json").read_text())
    assert_same_metrics(report, sequential)
    assert report["ray"]["workers"] == 2 and report["ray"]["threads_per_worker"] == 1
    assert report["failed_bags"] == [] and report["retried_bags"] == []
    assert_one_label_per_frame(out)
    for name in NAMES:  # the same pictures as the sequential run
        seq = Path(sequential["bags"][0]["output"]).parent / f"{name}_panels"
        assert sorted(p.name for p in (out / f"{name}_panels").iterdir()) == \
            sorted(p.name for p in seq.iterdir())
        assert json.loads(result_path(out / name).read_text())["source"] == \
            str((drives[0].parent / name).resolve())
    assert "| mIoU |" in (out / "report.md").read_text()


def test_a_killed_worker_is_retried_and_a_corrupt_bag_reported_while_the_others_complete(
        tmp_path: Path, drives: list[Path], sequential: dict[str, Any],
        ssnet_checkpoint_varied: Path, truth_dir: Path) -> None:
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "metadata.yaml").write_text("rosbag2_bagfile_information: [")
    out = tmp_path / "out"
    with KillMidBag(truth_dir, drives[1]) as killer:  # b's worker, on attempt 1
        report = run_on_ray([drives[0], broken, *drives[1:]], out, options(truth_dir),
                            spec(ssnet_checkpoint_varied))
    assert_killed_a_ray_worker(killer)
    [failure] = report["failed_bags"]  # a bad file is not transient: failed at once
    assert failure["bag"] == str(broken) and "cannot be read" in failure["reason"]
    [retry] = report["retried_bags"]
    assert retry["bag"] == str(drives[1]) and retry["attempts"] == 2 and retry["completed"]
    assert "died" in retry["reasons"][0]
    assert_same_metrics(report, sequential)  # the three good bags, nothing lost
    assert_one_label_per_frame(out)
    md = (out / "report.md").read_text()
    assert f"bag {drives[1]} was retried (2 attempts)" in md
    assert f"bag {broken} was not evaluated" in md


def test_resume_keeps_complete_bags_and_completes_the_rest(
        tmp_path: Path, drives: list[Path], sequential: dict[str, Any],
        ssnet_checkpoint_varied: Path, truth_dir: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    args = cli_args(drives, out, ssnet_checkpoint_varied, truth=truth_dir)
    with KillMidBag(truth_dir, drives[1]) as killer:
        assert main(args + ["--retries", "0"]) == 1  # no new attempt: b fails, a and c complete
    assert_killed_a_ray_worker(killer)
    assert "worker died" in capsys.readouterr().err
    report = json.loads((out / "report.json").read_text())
    assert [f["bag"] for f in report["failed_bags"]] == [str(drives[1])]
    assert not (out / "b").exists() and not result_path(out / "b").exists()
    kept = {p: p.stat().st_mtime_ns for name in "ac"
            for p in (result_path(out / name), out / name / f"{name}.mcap")}
    assert main(args) == 2  # the outputs exist: a plain rerun refuses
    assert "--overwrite" in capsys.readouterr().err
    assert main(args + ["--resume"]) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["resumed_bags"] == [str(drives[0]), str(drives[2])]
    assert report["failed_bags"] == [] and report["ray"]["workers"] == 1  # one bag to do
    assert {p: p.stat().st_mtime_ns for p in kept} == kept  # not redone
    assert_same_metrics(report, sequential)
    assert_one_label_per_frame(out)
    # another model size is not the same run: --resume refuses to mix the two
    assert main(cli_args(drives, out, ssnet_checkpoint_varied, width=48, truth=truth_dir)
                + ["--resume"]) == 2
    assert "other options (input_size)" in capsys.readouterr().err
