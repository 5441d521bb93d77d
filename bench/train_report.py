"""The training benchmark's rows, ratios and Markdown: what bench/train.py measured, as tables."""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any

from bench.common import Ratio, busy_warning, keras_line, machine_line, ratios_table
from bench.train_workloads import Workload

PIPELINES = {
    "cnnlab": "cnnlab (Experiment + run_experiment)",
    "keras": "Keras 3 ImageDataGenerator.flow + model.fit",
    "idiomatic": "PyTorch DataLoader + torchvision v2",
    "reference": "hand-written device-resident loop",
    "synthetic": "synthetic-data ceiling (the hand-written loop's steps on one fixed batch)",
}
# The GPU goals, cnnlab's img/s on CUDA ÷ the peer's on the same GPU: at least
CUDA_GOALS = {"reference": 0.9, "synthetic": 0.9}
RSS_GOAL = 0.5  # the CPU goal: cnnlab's peak RSS ÷ Keras's, at most


@dataclass
class NotRun:
    key: str
    workload: Workload
    pipeline: str
    device: str
    reason: str

    def as_dict(self) -> dict[str, Any]:
        return {"key": self.key, "reason": self.reason, "device": self.device}


@dataclass
class TrainRow:
    key: str  # workload/pipeline/device
    workload: Workload
    pipeline: str
    device: str
    params: int
    train_images: int  # per epoch: one pass over the training split
    val_images: int
    records: list[dict[str, float]]  # per epoch: seconds (train + validation), val_accuracy
    rss_mb: float  # peak resident memory of the process (VmHWM)
    import_rss_mb: float  # resident memory after importing the framework, before any data
    train_rss_mb: float  # peak while training (cnnlab: sampled until its last epoch is logged)
    gpu_peak_mb: float | None
    versions: dict[str, Any] = field(default_factory=dict)
    wall_s: float = 0.0  # the whole process: start-up, imports, data, training, cnnlab's report

    @classmethod
    def from_child(cls, key: str, workload: Workload, found: dict[str, Any]) -> TrainRow:
        return cls(
            key=key,
            workload=workload,
            pipeline=found["pipeline"],
            device=found["device"],
            params=int(found["params"]),
            train_images=int(found["train_images"]),
            val_images=int(found["val_images"]),
            records=list(found["records"]),
            rss_mb=float(found["rss_mb"]),
            import_rss_mb=float(found.get("import_rss_mb", 0.0)),
            train_rss_mb=float(found.get("train_rss_mb") or found["rss_mb"]),
            gpu_peak_mb=found["gpu_peak_mb"],
            versions=found.get("versions", {}),
            wall_s=float(found.get("wall_s", 0.0)),
        )

    @property
    def warmup_s(self) -> float:
        return self.records[0]["seconds"]

    @property
    def img_per_s(self) -> float:
        """Training images per second over the epochs after the first (all of them if one)."""
        timed = self.records[1:] or self.records
        seconds = sum(r["seconds"] for r in timed)
        return self.train_images * len(timed) / seconds if seconds > 0 else 0.0

    def epoch_spread(self) -> str:
        """The slowest and fastest timed epoch, as img/s: how steady the machine was."""
        timed = [r["seconds"] for r in (self.records[1:] or self.records)]
        return f"{self.train_images / max(timed):,.1f} to {self.train_images / min(timed):,.1f}"

    @property
    def best_val(self) -> float:
        return max(r["val_accuracy"] for r in self.records)

    def time_to_target(self) -> tuple[float, int] | None:
        """Seconds from the start of training to the end of the first epoch at the target."""
        elapsed = itertools.accumulate(r["seconds"] for r in self.records)
        for epoch, (seconds, record) in enumerate(zip(elapsed, self.records, strict=True), 1):
            if record["val_accuracy"] >= self.workload.target:
                return seconds, epoch
        return None

    def target_cell(self) -> str:
        reached = self.time_to_target()
        if reached is None:
            return f"not reached in {len(self.records)} epochs"
        return f"{reached[0]:.1f} s (epoch {reached[1]})"

    def summary(self) -> str:
        return (
            f"{self.img_per_s:,.1f} img/s, epoch 1 {self.warmup_s:.1f} s, "
            f"best val acc {self.best_val:.3f}, peak RSS {self.rss_mb:,.0f} MB, "
            f"process {self.wall_s:.1f} s"
        )

    def as_dict(self) -> dict[str, Any]:
        reached = self.time_to_target()
        return {
            "key": self.key,
            "workload": self.workload.key,
            "pipeline": self.pipeline,
            "device": self.device,
            "params": self.params,
            "images": self.train_images,
            "val_images": self.val_images,
            "epochs": self.records,
            "warmup_s": self.warmup_s,
            "img_per_s": self.img_per_s,
            "target": self.workload.target,
            "time_to_target_s": reached[0] if reached else None,
            "target_epoch": reached[1] if reached else None,
            "best_val_accuracy": self.best_val,
            "rss_mb": self.rss_mb,
            "import_rss_mb": self.import_rss_mb,
            "train_rss_mb": self.train_rss_mb,
            "gpu_peak_mb": self.gpu_peak_mb,
            "versions": self.versions,
            "wall_s": self.wall_s,
        }


def ratios(rows: list[TrainRow]) -> list[Ratio]:
    """cnnlab's img/s ÷ each peer's (Keras always on the CPU), and peak RSS ÷ Keras's."""
    by_key = {row.key: row for row in rows}
    found = []
    for ours in (row for row in rows if row.pipeline == "cnnlab"):
        workload, device = ours.workload, ours.device
        for peer in ("keras", "idiomatic", "reference", "synthetic"):
            theirs = by_key.get(f"{workload.key}/{peer}/{device}")
            if theirs is None and peer == "keras":  # no Keras on this GPU: the CPU's, as before
                theirs = by_key.get(f"{workload.key}/keras/cpu")
            if theirs is None or theirs.img_per_s <= 0:
                continue
            value = ours.img_per_s / theirs.img_per_s
            target = None
            if theirs.device != device:
                pass  # a ratio across devices has no goal
            elif peer == "keras":
                target = workload.speed_goal if device == "cpu" else workload.cuda_speed_goal
            elif device == "cuda":
                target = CUDA_GOALS.get(peer)
            goal = ""
            if target:
                goal = f"; goal ≥ {target:g}x: {'met' if value >= target else 'NOT met'}"
            found.append(
                Ratio(
                    f"{workload.key}: cnnlab {device} vs {peer} {theirs.device}, img/s",
                    value,
                    f"training img/s after the warm-up epoch, cnnlab ÷ {PIPELINES[peer]}{goal}",
                )
            )
        keras = by_key.get(f"{workload.key}/keras/cpu")
        if keras is not None and device == "cpu":
            found += _rss_ratios(ours, keras)
    return found


def _rss_ratios(ours: TrainRow, keras: TrainRow) -> list[Ratio]:
    """cnnlab's peak RSS ÷ Keras's: the whole run (run_experiment also evaluates every split and
    renders its report after training), while training, and above each one's imports."""
    name = f"{ours.workload.key}: cnnlab cpu vs keras cpu"
    found = []
    for what, value in (
        ("peak RSS, whole run", ours.rss_mb / keras.rss_mb),
        ("peak RSS while training", ours.train_rss_mb / keras.rss_mb),
    ):
        met = "met" if value <= RSS_GOAL else "NOT met"
        found.append(
            Ratio(
                f"{name}, {what}",
                value,
                f"cnnlab {ours.rss_mb if 'whole' in what else ours.train_rss_mb:,.0f} MB ÷ "
                f"Keras {keras.rss_mb:,.0f} MB (lower is better); goal ≤ {RSS_GOAL:g}x: {met}",
            )
        )
    ours_growth = ours.train_rss_mb - ours.import_rss_mb
    theirs_growth = keras.rss_mb - keras.import_rss_mb
    if ours.import_rss_mb and keras.import_rss_mb and theirs_growth > 0:
        found.append(
            Ratio(
                f"{name}, RSS above imports while training",
                ours_growth / theirs_growth,
                f"data, model, activations: cnnlab {ours_growth:,.0f} MB ÷ Keras "
                f"{theirs_growth:,.0f} MB (imports: cnnlab {ours.import_rss_mb:,.0f} MB, Keras "
                f"{keras.import_rss_mb:,.0f} MB)",
            )
        )
    return found


def _workloads_table(settings: dict[str, Any], rows: list[TrainRow]) -> str:
    sizes = {row.workload.key: (row.train_images, row.val_images) for row in rows}
    lines = [
        "| workload | train / val images | augmentation (cnnlab preset) | batch | optimiser | "
        "epochs | target val acc |",
        "|---|---:|---|---:|---|---:|---:|",
    ]
    for key, w in settings["workloads"].items():
        train, val = sizes.get(key, ("—", "—"))
        augment = ", ".join(f"{k} {v}" for k, v in w["augment"].items() if k != "preset")
        optimiser = f"{w['optimizer']['name']} lr {w['optimizer']['lr']:g}"
        lines.append(
            f"| {w['title']} | {train} / {val} | {w['augment']['preset']}: {augment} | "
            f"{w['batch_size']} | {optimiser} | {w['epochs']} | {w['target']:g} |"
        )
    return "\n".join(lines)


def _results_table(rows: list[TrainRow], not_run: list[NotRun], workloads: list[str]) -> str:
    lines = [
        "| workload | pipeline | device | params | epoch 1 s (warm-up) | img/s, epochs 2+ (range) "
        "| time to target | best val acc | peak RSS MB (after imports) | peak GPU MB |",
        "|---|---|---|---:|---:|---:|---|---:|---:|---:|",
    ]
    pipelines = [*PIPELINES, "all"]

    def order(item: TrainRow | NotRun) -> tuple[int, str, int]:  # as the workloads, cnnlab first
        return workloads.index(item.workload.key), item.device, pipelines.index(item.pipeline)

    for item in sorted([*rows, *not_run], key=order):
        name = PIPELINES.get(item.pipeline, item.pipeline)
        if isinstance(item, NotRun):
            lines.append(
                f"| {item.workload.key} | {name} | {item.device} | {item.reason} |" + 6 * " — |"
            )
            continue
        rss = f"{item.rss_mb:,.0f} ({item.import_rss_mb:,.0f})"
        if item.pipeline == "cnnlab":
            rss += f"; training {item.train_rss_mb:,.0f}"
        gpu = "—" if item.gpu_peak_mb is None else f"{item.gpu_peak_mb:,.0f}"
        lines.append(
            f"| {item.workload.key} | {name} | {item.device} | {item.params:,} | "
            f"{item.warmup_s:.2f} | {item.img_per_s:,.1f} ({item.epoch_spread()}) | "
            f"{item.target_cell()} | "
            f"{item.best_val:.3f} | {rss} | {gpu} |"
        )
    return "\n".join(lines)


def _warmups(rows: list[TrainRow]) -> str:
    """Epoch 1 minus a later epoch: set-up, tracing (Keras) and compilation (reference on CUDA)."""
    parts = []
    for row in rows:
        later = [r["seconds"] for r in row.records[1:]]
        if later:
            extra = row.warmup_s - sum(later) / len(later)
            parts.append(f"{row.workload.key} {row.pipeline} {row.device} {extra:+.2f} s")
    if not parts:
        return ""
    return (
        "Warm-up and compile overhead (epoch 1 minus the mean later epoch; it holds Keras's "
        "tf.function tracing and, on CUDA, the reference's torch.compile): "
        + "; ".join(parts)
        + "."
    )


def markdown(
    rows: list[TrainRow],
    not_run: list[NotRun],
    found_ratios: list[Ratio],
    machine: dict[str, Any],
    settings: dict[str, Any],
) -> str:
    keras = keras_line(machine["keras_peer"])
    gpu = f" GPU: {machine['gpu']}." if machine["gpu"] else ""
    quick = ", quick run: timings mean nothing" if settings["quick"] else ""
    threads = settings["cpu_threads"]
    val_batch = f"the training batch on the CPU, {settings['val_batch_size']['cuda']} on CUDA"
    processes = (
        "one process per pipeline for all workloads (quick: peak RSS spans them)"
        if settings["quick"]
        else "one process per pipeline and workload"
    )
    parts = [
        f"## training: cnnlab vs Keras vs PyTorch DataLoader vs a hand-written loop{quick}",
        "Same model, augmentation parameters, data (decoded once, the same uint8 pixels) and "
        f"batch size for every pipeline; {processes}, in sequence. An epoch is one pass over the "
        f"training split and one over the validation split (batch: {val_batch}); img/s counts "
        "training images over the epochs after the first; time to target runs from the start "
        "of training to the end of the first epoch whose validation accuracy reaches the "
        f"target. On the CPU every pipeline gets {threads} threads (DataLoader: {threads} "
        "workers besides the main process). Peak RSS is the pipeline process's VmHWM (DataLoader "
        "workers, which share its pages copy-on-write, are not added); in parentheses its "
        "resident memory after importing its framework, before any data.",
        f"Machine: {machine_line(machine)}.{gpu} Peer: {keras}. 1-minute load average: "
        f"{_load(machine['load_avg_before'])} before the run, "
        f"{_load(machine['load_avg_after'])} after.",
        busy_warning(machine["load_avg_before"], machine["cpu_count"]),
        _workloads_table(settings, rows),
        _results_table(rows, not_run, list(settings["workloads"])),
        _warmups(rows),
        _decoding(settings.get("decoded", {})),
        ratios_table(found_ratios) if found_ratios else "",
    ]
    return "\n\n".join(part for part in parts if part) + "\n"


def _decoding(decoded: dict[str, dict[str, float]]) -> str:
    """The one-time cost the epochs leave out: each workload's folder decoded into the cache."""
    if not decoded:
        return ""
    parts = [
        f"{key} {d['seconds']:.1f} s for {int(d['images']):,} images "
        f"({d['images'] / max(d['seconds'], 1e-9):,.0f} img/s)"
        for key, d in decoded.items()
    ]
    return (
        "Decoding once into cnnlab's cache (load_data on the extracted folder, before every "
        "pipeline; the rows' epochs read the decoded pixels): " + "; ".join(parts) + "."
    )


def _load(value: float | None) -> str:
    return "unknown" if value is None else f"{value:.2f}"
