"""Which label-free criterion would pick DiEC's (layer, timestep) well? Spearman with ACC per cell.

Study, 2026-11-23. Decision it produced: DiEC's search criterion defaults to the silhouette (`method.search.criterion`).

    python bench/studies/diec_criteria.py --unet outputs/bench/quality/mnist-test/diec/seed0/diec/pretrained
    python bench/studies/diec_criteria.py --pretrain-epochs 60 --output outputs/bench/diec_unet60   # GPU
The UNet is one DiEC pretrained (bench/quality.py --methods diec leaves it there), or, with
`--pretrain-epochs N`, one pretrained here first: configs/method/diec.yaml's pretraining (UNet,
schedule, EMA) with N epochs, on all 10,000 MNIST test digits, in this process (the loop a Ray
Train worker runs) on cuda when available; it is saved to `--output`. On the same
1,000-image MNIST subset as the search (seed 0), for every (block, timestep) cell: k-means ACC
(labels) and five label-free scores of the partition - Calinski-Harabasz (DiEC's), silhouette
(standardised Euclidean; cosine on raw activations), -Davies-Bouldin, and split-half stability
(ARI between k-means fitted on one half and on the other, both labelling the second half).
Prints the table, then per criterion its Spearman correlation with ACC and the cell it picks.
With `--finetune`, DiEC's third stage follows in this process on the cell `--criterion` picks:
configs/method/diec.yaml's start on that cell's embeddings of all 10,000 digits (`DiEC.model_config`:
k-means, and k-means on a UMAP of them when `manifold` is set), then its DEC fine-tune
(`train_epochs`, one worker), then ACC of each.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))   # bench/common.py
from common import SHARED, append_json_rows  # noqa: E402


def scores(embeddings: np.ndarray, labels: np.ndarray, k: int) -> dict:
    from sklearn.cluster import KMeans
    from sklearn.metrics import adjusted_rand_score, calinski_harabasz_score, davies_bouldin_score, silhouette_score

    from raycluster.metrics import supervised_metrics

    standardised = (embeddings - embeddings.mean(0)) / (embeddings.std(0) + 1e-6)
    clusters = KMeans(k, n_init=3, random_state=0).fit_predict(standardised)
    half = len(embeddings) // 2
    first = KMeans(k, n_init=3, random_state=1).fit(standardised[:half])
    second = KMeans(k, n_init=3, random_state=2).fit(standardised[half:])
    return {"acc": supervised_metrics(labels, clusters)["acc"],
            "chi": calinski_harabasz_score(standardised, clusters),
            "silhouette": silhouette_score(standardised, clusters),
            "silhouette_cos": silhouette_score(embeddings, clusters, metric="cosine"),
            "neg_davies_bouldin": -davies_bouldin_score(standardised, clusters),
            "stability": adjusted_rand_score(first.predict(standardised[half:]), second.labels_)}


def pretrain_here(images: np.ndarray, epochs: int, output: str) -> str:
    """images (N, 28, 28) uint8 -> a UNet folder: diec.yaml's pretraining with `epochs`, trained in this process."""

    import torch
    from raycluster.config import compose

    from raycluster.diffusion.objective import build_denoiser
    from raycluster.diffusion.pretrain import pretraining_setup
    from raycluster.diffusion.unet import save_unet
    from raycluster.train.loop import make_optimizer, train_epochs

    settings = compose(["method=diec"]).method["pretrain"]
    config, optim = pretraining_setup((1, 28, 28), settings["unet"], {**settings["optim"], "epochs": epochs},
                                      settings["ema_decay"])
    device = "cuda" if torch.cuda.is_available() else "cpu"
    torch.manual_seed(0)
    model = build_denoiser(config).to(device)
    pixels = torch.from_numpy(images.reshape(len(images), -1).astype(np.float32) / 255).to(device)
    steps = int(np.ceil(len(pixels) / optim.batch_size))

    def report(epoch, terms, *_):
        print(f"pretrain epoch {epoch + 1}/{epochs} ({device}): loss {terms['loss']:.4f} "
              f"{terms['epoch_seconds']:.1f}s", flush=True)

    train_epochs(model, pixels, optim, make_optimizer(model, optim), steps, on_epoch_end=report)
    save_unet(model.ema.module.cpu(), model.scheduler, output)
    return output


def finetune_here(unet: str, layer: str, timestep: int, images: np.ndarray, labels: np.ndarray) -> list[dict]:
    """DiEC's stage 3 on all `images` (N, 28, 28) uint8 at (layer, timestep) -> rows for the k-means
    start and the fine-tuned model (ACC / NMI / ARI)."""

    import torch
    from raycluster.config import compose

    from raycluster.methods.diec.model import build_diec
    from raycluster.methods.diec.method import DiEC
    from raycluster.metrics import supervised_metrics
    from raycluster.train.loop import make_optimizer, train_epochs

    settings = compose(["method=diec"]).method
    method = DiEC(10, unet=unet, layer=layer, timestep=timestep, model=settings["model"], optim=settings["optim"],
                  manifold=settings.get("manifold"))
    pixels = images.reshape(len(images), -1).astype(np.float32) / 255
    config, initial = method.model_config(unet, layer, timestep, pixels, labels)   # the start, scored in stages
    device = "cuda" if torch.cuda.is_available() else "cpu"
    torch.manual_seed(0)
    model = build_diec(config).to(device)
    if initial is not None:   # what a Ray Train worker gets: the initial clusters and its rows' ids
        model.attach_context(initial)
        model.attach_shard(torch.arange(len(pixels)))
    on_device = torch.from_numpy(pixels).to(device)
    steps = int(np.ceil(len(pixels) / method.optim.batch_size))

    def report(epoch, terms, clusters, seen):
        print(f"finetune epoch {epoch + 1}/{method.optim.epochs} ({device}): kl {terms['kl']:.4f} denoise "
              f"{terms['denoise']:.4f} batch ACC {supervised_metrics(labels[seen], clusters)['acc']:.3f}", flush=True)

    train_epochs(model, on_device, method.optim, make_optimizer(model, method.optim), steps, on_epoch_end=report,
                 row_ids=torch.arange(len(pixels)))
    cluster, _ = model.predict(on_device)
    rows = [{"bench": "diec_criteria", "dataset": "mnist-test", "method": name, "layer": layer, "timestep": timestep,
             **{k: round(v, 4) for k, v in scores.items()}}
            for name, scores in (("diec_init_kmeans", method.stages["init_kmeans"]),
                                 ("diec_init_manifold", method.stages.get("init_manifold")),
                                 ("diec", supervised_metrics(labels, cluster.cpu().numpy()))) if scores]
    for row in rows:
        print(f"{row['method']} at {layer} t={timestep}: ACC {row['acc']:.4f} NMI {row['nmi']:.4f} ARI {row['ari']:.4f}")
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--unet", help="a pretrained DiEC UNet folder")
    source.add_argument("--pretrain-epochs", type=int, help="pretrain one here first, for this many epochs")
    parser.add_argument("--output", default="outputs/bench/diec_criteria_unet", help="where --pretrain-epochs saves")
    parser.add_argument("--timesteps", type=int, nargs="+", default=[0, 50, 100, 200, 400])
    parser.add_argument("--subset", type=int, default=1000)
    parser.add_argument("--pool", type=int, default=4)
    parser.add_argument("--finetune", action="store_true", help="then DiEC's DEC fine-tune on the picked cell")
    parser.add_argument("--criterion", default="silhouette", help="the criterion whose cell --finetune uses")
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)

    import torch
    from scipy.stats import spearmanr

    from raycluster.data.builtin import mnist_arrays
    from raycluster.diffusion.unet import build_scheduler, load_unet, to_model_input
    from raycluster.features.unet import layer_names, unet_features

    all_images, all_labels = images, labels = mnist_arrays(str(SHARED / "mnist-test"))
    if args.pretrain_epochs:
        args.unet = pretrain_here(images, args.pretrain_epochs, args.output)
    rows = np.random.default_rng(0).permutation(len(images))[:args.subset]   # the search's subset (seed 0)
    pixels = torch.from_numpy(images[rows].reshape(len(rows), -1).astype(np.float32) / 255)
    labels = labels[rows]
    unet, scheduler = load_unet(args.unet).eval(), build_scheduler(source=args.unet)
    model_input = to_model_input(pixels, (1, 28, 28), unet.config.sample_size)
    cells = []
    for timestep in args.timesteps:
        with torch.no_grad():
            features = unet_features(unet, scheduler, model_input, layer_names(unet), timestep, 2,
                                     torch.Generator().manual_seed(0), args.pool)
        for layer, embeddings in features.items():
            cells.append({"layer": layer, "timestep": timestep, **scores(embeddings.numpy(), labels, 10)})
            print("  ".join(f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}" for k, v in cells[-1].items()),
                  flush=True)
    print(f"\n{'criterion':<20}{'spearman vs ACC':>16}{'picks':>14}{'its ACC':>9}   (best ACC "
          f"{max(c['acc'] for c in cells):.3f})")
    out = []
    for criterion in ("chi", "silhouette", "silhouette_cos", "neg_davies_bouldin", "stability"):
        rho = float(spearmanr([c[criterion] for c in cells], [c["acc"] for c in cells]).statistic)
        pick = max(cells, key=lambda c: c[criterion])
        print(f"{criterion:<20}{rho:>16.3f}{pick['layer'] + ' t' + str(pick['timestep']):>14}{pick['acc']:>9.3f}")
        out.append({"bench": "diec_criteria", "dataset": "mnist-test", "method": criterion, "spearman_acc": round(rho, 3),
                    "layer": pick["layer"], "timestep": pick["timestep"], "acc": round(pick["acc"], 4)})
    if args.finetune:
        pick = max(cells, key=lambda c: c[args.criterion])
        out += finetune_here(args.unet, pick["layer"], pick["timestep"], all_images, all_labels)
    append_json_rows(args.json, [{"bench": "diec_criteria", "dataset": "mnist-test", "method": "cell", **c}
                                 for c in cells] + out)
    return out


if __name__ == "__main__":
    main()
    sys.exit(0)
