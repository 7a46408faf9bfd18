"""Trust, tried as a demanding user would: every case of the trust issue, from a clean cache, in one go.

    python bench/robustness.py                      # ~10 min on 2 cores; prints case | expected | got | ok
    python bench/robustness.py --json bench/results/robustness.jsonl --cases shards_limit xss

Each case runs the real jobs (`jobs/train.py`, `jobs/predict.py`) as subprocesses with their own
cache_dir / output_dir under --work, and checks what a user would look at: summary.json, exit
status, the error line, the page in Chromium, the processes left behind. The last row times the
fingerprint checks a rerun of the embedded default adds (shards + store + parts).
"""
from __future__ import annotations

import argparse
import json
import os
import pickle
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from common import append_json_rows, parse_with_work_dir  # noqa: E402


def job(work: Path, script: str, *overrides: str, timeout: int = 600) -> subprocess.CompletedProcess:
    args = [sys.executable, str(REPO / "jobs" / script), *overrides]
    return subprocess.run(args, capture_output=True, text=True, timeout=timeout, cwd=REPO)


def train(work: Path, name: str, *overrides: str, cache: str = "cache") -> tuple[subprocess.CompletedProcess, dict]:
    """jobs/train.py with this case's folders; (process, summary or {})."""
    run_dir = work / "runs" / name
    result = job(work, "train.py", f"cache_dir={work / cache}", f"output_dir={run_dir}", "report=false", *overrides)
    path = run_dir / "summary.json"
    return result, json.loads(path.read_text()) if result.returncode == 0 and path.exists() else {}


def error_line(result: subprocess.CompletedProcess, width: int = 110) -> str:
    lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    return f"exit {result.returncode}, {len(lines)} error line(s)" + (f": {lines[0][:width]}" if lines else "") + \
        (", traceback" if "Traceback" in result.stderr else "")


def png(size=8, value=0) -> bytes:
    from raycluster.data.builtin import encode_png

    return encode_png(np.full((size, size), value, np.uint8))


def photo_folder(root: Path, classes: dict) -> Path:
    """classes: {folder name: number of images}; images differ by class so clusters mean something."""
    for label, (name, count) in enumerate(classes.items()):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(count):
            (root / name / f"{i}.png").write_bytes(png(8, 40 * label + i % 5))
    return root


# -- the cases: each returns (expected, got, ok) ------------------------------------------------------
def case_shards_limit(work):
    train(work, "limit", "data.source.limit=300")
    _, summary = train(work, "full")
    return "a full run after a limit=300 run has 1797 samples", f"{summary.get('samples')} samples", \
        summary.get("samples") == 1797


def case_shards_other_folder(work):
    one = photo_folder(work / "one", {"a": 6, "b": 6})
    two = photo_folder(work / "two", {"c": 7, "d": 7, "e": 7})
    folder = ["data=folder", "data.num_clusters=2", "backbone.extractor.size=8"]
    train(work, "folder-one", *folder, f"data.source.path={one}", cache="cache-folders")
    _, summary = train(work, "folder-two", *folder, f"data.source.path={two}", cache="cache-folders")
    return "another folder under the same data.name: its 21 images", f"{summary.get('samples')} samples", \
        summary.get("samples") == 21


def case_shards_files_added(work):
    root = photo_folder(work / "grow", {"a": 10, "b": 10})
    folder = ["data=folder", "data.num_clusters=2", "backbone.extractor.size=8", f"data.source.path={root}"]
    train(work, "grow-1", *folder, cache="cache-grow")
    photo_folder(root, {"a": 10, "b": 10, "c": 50})
    _, summary = train(work, "grow-2", *folder, cache="cache-grow")
    return "50 images added to the folder are clustered", f"{summary.get('samples')} samples", summary.get("samples") == 70


def case_embeddings_extractor(work):
    train(work, "pixels-default", cache="cache-extractor")
    _, summary = train(work, "pixels-size4", "backbone.extractor.size=4", cache="cache-extractor")
    return "backbone.extractor.size=4 after a default run: 16-d embeddings", f"dim {summary.get('dim')}", \
        summary.get("dim") == 16


def case_method_stage(work):
    stage = ["method=temi", "method.optim.epochs=1"]
    first, _ = train(work, "temi-1", *stage, f"method.storage_path={work / 'temi-train'}", cache="cache-temi")
    second, _ = train(work, "temi-2", *stage, "method.model.teacher_momentum=0.9",
                      f"method.storage_path={work / 'temi-train'}", cache="cache-temi")
    redone = "made from other inputs" in second.stderr and "resuming from the checkpoint" not in second.stderr
    return "a changed method setting retrains, not resumes the old checkpoint", \
        f"exit {first.returncode}/{second.returncode}, {'retrained' if redone else 'resumed or failed'}", \
        first.returncode == second.returncode == 0 and redone


def case_xss(work):
    from raycluster.report.browser import inspect_page

    root = work / "hostile"
    for label, name in enumerate(["<b>bold</b>", "<img src=x onerror=alert('class')>"]):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(12):
            stem = f'x" onmouseover="alert({i})" y="' if i % 3 == 0 else f"img{i}"
            (root / name / f"{stem}.png").write_bytes(png(8, 40 + 150 * label + i))
    run_dir = work / "runs" / "xss"
    result = job(work, "train.py", f"cache_dir={work / 'cache-xss'}", f"output_dir={run_dir}", "data=folder",
                 f"data.source.path={root}", "data.num_clusters=2", "backbone.extractor.size=8")
    if result.returncode:
        return "hostile names stay text", error_line(result), False
    page = inspect_page(str(run_dir / "report" / "index.html"))
    got = f"{len(page['dialogs'])} dialogs, {page['handlers']} on* attributes, {page['scripts']} scripts"
    return "hostile class/file names stay text in Chromium", got, not (page["dialogs"] or page["handlers"] or page["scripts"])


def case_pickle(work):
    marker = work / "pwned"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    _, summary = train(work, "for-predict", cache="cache")
    run_dir = Path(summary["outputs"]["summary"]).parent
    Path(summary["outputs"]["method"]).write_bytes(pickle.dumps(Payload()))
    result = job(work, "predict.py", f"run_dir={run_dir}")
    return "a crafted method file is refused, its code never runs", \
        f"{error_line(result)}; payload ran: {marker.exists()}", result.returncode == 2 and not marker.exists()


def case_folder_depth(work):
    root = work / "deep"
    files = [f"cls{c}/{'sub/' * (i % 3)}{i}.png" for c in range(2) for i in range(12)] + ["root1.png", "root2.png", "cls0/notes.txt"]
    for name in files:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(png(8, 7) if name.endswith(".png") else b"x")
    _, summary = train(work, "deep", "data=folder", f"data.source.path={root}", "data.num_clusters=2",
                       "backbone.extractor.size=8", cache="cache-deep")
    return "26 images at any depth are samples; 1 other file counted", \
        f"{summary.get('samples')} samples, skipped {summary.get('source_files_skipped')}", \
        summary.get("samples") == 26 and sum((summary.get("source_files_skipped") or {}).values()) == 1


def case_mixed_sizes(work):
    root = work / "mixed"
    for i, size in enumerate((8, 8, 12, 12, 8, 12)):
        (root / f"c{i % 2}").mkdir(parents=True, exist_ok=True)
        (root / f"c{i % 2}" / f"{i}.png").write_bytes(png(size, 9))
    result, _ = train(work, "mixed", "data=folder", f"data.source.path={root}", "data.num_clusters=2", cache="cache-mixed")
    got = error_line(result, width=400)
    return "one line naming backbone.extractor.size, exit 2", got, \
        result.returncode == 2 and "backbone.extractor.size" in got and "traceback" not in got


def config_case(overrides, expected):
    def case(work):
        start = time.time()
        result, _ = train(work, "config", *overrides, cache="cache-config")
        seconds = time.time() - start
        got = f"{error_line(result)} after {seconds:.0f}s, cache built: {(work / 'cache-config').exists()}"
        return expected, got, result.returncode == 2 and "traceback" not in got and not (work / "cache-config").exists() \
            and got.count("error line(s)") == 1 and "1 error line(s)" in got
    return case


def case_killed_driver(work):
    import psutil

    from raycluster.ray_watchdog import session_processes

    code = ("import time\nfrom ray._private import worker\nfrom raycluster.ray_utils import ensure_ray\n"
            "ensure_ray(num_cpus=1)\nprint('session', worker._global_node.session_name, flush=True)\ntime.sleep(600)\n")
    driver = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                              cwd=REPO)
    session = driver.stdout.readline().split()[-1]
    time.sleep(3)

    def processes():
        return session_processes(session)

    exposed = sorted({f"{c.laddr.ip}:{c.laddr.port}" for p in processes() for c in p.net_connections("inet")
                      if c.status == psutil.CONN_LISTEN and c.laddr.ip not in ("127.0.0.1", "::1", "::ffff:127.0.0.1")})
    token = os.path.expanduser("~/.ray/auth_token")
    mode = oct(os.stat(token).st_mode & 0o777) if os.path.exists(token) else "none"
    driver.send_signal(signal.SIGKILL)
    driver.wait()
    deadline = time.time() + 30
    while processes() and time.time() < deadline:
        time.sleep(1)
    left = len(processes())
    return "after SIGKILL no Ray process left within 30 s; nothing on 0.0.0.0; token 0600", \
        f"{left} left, exposed {exposed or 'none'}, token {mode}", left == 0 and not exposed and mode in ("0o600", "none")


def case_mixed_width_predict(work):
    from raycluster.data.store import EmbeddingStore

    _, summary = train(work, "for-width", cache="cache")
    run_dir = Path(summary["outputs"]["summary"]).parent
    store = EmbeddingStore(str(work / "mixed-store"))
    store.write_part("a", ["k1", "k2"], [0, 0], np.zeros((2, 64)), from_shard=False)
    store.write_part("b", ["k3", "k4"], [0, 0], np.zeros((2, 16)), from_shard=False)
    result = job(work, "predict.py", f"run_dir={run_dir}", f"embeddings_dir={work / 'mixed-store'}")
    got = error_line(result)
    return "a store of mixed widths: one line, exit 2", got, result.returncode == 2 and "traceback" not in got


def case_empty_folder(work):
    (work / "empty-photos").mkdir(exist_ok=True)
    result, _ = train(work, "empty", "data=folder", f"data.source.path={work / 'empty-photos'}", "data.num_clusters=2",
                      cache="cache-empty")
    got = error_line(result)
    return "the error names the input folder", got, result.returncode == 2 and str(work / "empty-photos") in got


def case_fingerprint_cost(work):
    from raycluster.config import compose
    from raycluster.data.store import EmbeddingStore
    from raycluster.features.extract import extractor_inputs, pending_shards
    from raycluster.fingerprint import reusable
    from raycluster.app.pipeline import ensure_shards

    train(work, "default-for-timing", cache="cache")
    cfg = compose([f"cache_dir={work / 'cache'}"])
    start = time.time()
    ensure_shards(cfg.data)
    reusable(cfg.embeddings_path, extractor_inputs(cfg.backbone), "embeddings")
    from raycluster.data.shards import resolve_shards

    pending, _ = pending_shards(EmbeddingStore(cfg.embeddings_path), resolve_shards(cfg.data.shards), "auto")
    seconds = time.time() - start
    return "fingerprint checks on a rerun of the default < 1 s", f"{seconds:.3f} s, {len(pending)} shard(s) to redo", \
        seconds < 1.0 and not pending


CASES = {
    "shards_limit": case_shards_limit, "shards_other_folder": case_shards_other_folder,
    "shards_files_added": case_shards_files_added, "embeddings_extractor": case_embeddings_extractor,
    "method_stage": case_method_stage, "xss": case_xss, "pickle": case_pickle, "folder_depth": case_folder_depth,
    "mixed_sizes": case_mixed_sizes,
    "num_clusters_0": config_case(["data.num_clusters=0"], "data.num_clusters=0: one line, exit 2, no work"),
    "num_clusters_neg": config_case(["data.num_clusters=-1"], "data.num_clusters=-1: one line, exit 2, no work"),
    "method_unknown_key": config_case(["++method.foo=1"], "++method.foo=1: one line, exit 2, no work"),
    "diec_model_typo": config_case(["method=diec", "++method.model.pol=2"], "a DiEC model-key typo: one line, exit 2"),
    "killed_driver": case_killed_driver, "mixed_width_predict": case_mixed_width_predict,
    "empty_folder": case_empty_folder, "fingerprint_cost": case_fingerprint_cost,
}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", nargs="+", default=list(CASES), choices=list(CASES))
    args, work, machine = parse_with_work_dir(parser, REPO / "outputs" / "bench-robustness")
    shutil.rmtree(work, ignore_errors=True)   # every case from a clean cache
    work.mkdir(parents=True)
    rows = []
    for name in args.cases:
        start = time.time()
        try:
            expected, got, ok = CASES[name](work)
        except Exception as err:   # a case that crashes is a failed case, not a crashed bench
            expected, got, ok = "(see the case)", f"{type(err).__name__}: {err}"[:200], False
        row = {"case": name, "expected": expected, "got": got, "ok": bool(ok), "seconds": round(time.time() - start, 1),
               "machine": machine}
        rows.append(row)
        print(json.dumps(row), flush=True)
    print("\n| case | expected | got | ok |\n|---|---|---|---|")
    for row in rows:
        print(f"| {row['case']} | {row['expected']} | {row['got']} | {'ok' if row['ok'] else 'FAILED'} |")
    print(f"\n{sum(r['ok'] for r in rows)}/{len(rows)} ok")
    append_json_rows(args.json, rows)
    sys.exit(0 if all(r["ok"] for r in rows) else 1)


if __name__ == "__main__":
    main()
