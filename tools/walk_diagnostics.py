"""What limits the random walks' labels on a dataset: bounds and probes against the GT (retab.diagnostics).

    python tools/walk_diagnostics.py ceiling --voc12_root VOC2012 --list voc12/train.txt
    python tools/walk_diagnostics.py perfect_affinity --voc12_root VOC2012 --list voc12/train.txt \\
        --cam_dir psa/out/psa_trainaug_cam --alpha 2.5
    python tools/walk_diagnostics.py affinity_auc --voc12_root VOC2012 --list voc12/train.txt \\
        --weights RETAB/out/fold0/affmodel/resnet38_affmixed_fold0.pth --width 0.125
    python tools/walk_diagnostics.py crf_labels --voc12_root VOC2012 --list voc12/train.txt \\
        --cam_dir psa/out/psa_trainaug_cam --crf_alphas 4,32 0.5,4
    python tools/walk_diagnostics.py training_pairs --voc12_root VOC2012 --list voc12/train_aug.txt \\
        --list_dir voc12 --la_crf_dir psa/out/psa_trainaug_crf_0.5 --ha_crf_dir psa/out/psa_trainaug_crf_4.0 \\
        --boundary_target_dir RETAB/out/fold0/boundary_pred/boundary_fold0_kernel0_threshold0.8 --crop_size 128
    python tools/walk_diagnostics.py boundary_maps --voc12_root VOC2012 --list voc12/train.txt \\
        --boundary_target_dir RETAB/out/fold0/boundary_pred/boundary_fold0_kernel0_threshold0.8
    python tools/walk_diagnostics.py label_changes --voc12_root VOC2012 --list voc12/train.txt \
        --cam_dir psa/out/psa_trainaug_cam --threshold 0.46 --labels_dir RETAB/out/fold0/rw_stage2

`ceiling` and `perfect_affinity` print all/base/novel mIoU of the fold (as the evaluation stages);
`affinity_auc` prints, for the pictures with a novel object (pairs touching one) and the others,
how well the net's affinities rank same-label pairs above different-label pairs; `crf_labels`
prints, for each LA_ALPHA,HA_ALPHA pair, how right the affinity trainings' CRF label grids of these
CAMs are (whole pictures, no crop, no boundary mask): the share of "sure foreground" cells with
the GT's class, its recall, the share of "sure background" cells that are background; then, for
those grids and for the base samples' labels (the GT nearest-sampled, as RETAB trains on them), the
share of the pairs each kind teaches (positive background, positive foreground, negative) that the
GT's cell-majority labels agree with. GT masks are read from SegmentationClass (band = 255).
`training_pairs` crops the pictures as the affinity trainings do (same seed, --epochs epochs) and
counts the pairs each kind of sample teaches: PSA's labels (CRF everywhere) against RETAB's (base
GT, novel CRF masked by the boundary targets); per crop, and the novel samples' share of each kind,
i.e. of each term of the loss. `boundary_maps` prints, for base and novel objects, the share of
the pixels within 3 px of their outlines and of those over 4 px inside them that the target maps
flag as boundary (retab.diagnostics.boundary_flag_counts). `label_changes` compares a walk's label
PNGs with the CAMs' labels at the background threshold --threshold, for base and novel objects, as
shares of the objects' GT pixels: the pixels the walk filled in and lost, and the other pixels
(leaks) it stopped and started calling them (retab.diagnostics.label_change_counts).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from tqdm import tqdm

from retab import diagnostics, published
from retab.data.datasets import load_voc_image
from retab.metrics import confusion_matrix, scores_from_confusion
from retab.misc.errors import RetabError
from retab.misc.fileio import load_score_dict
from retab.engines.evaluation import best_object_channel, load_gt, summary_line
from retab.engines.stage_support import add_grid_sampling_arg
from retab.voc import load_label_png, novel_labels, read_name_list


def gt_mask(voc_root: str, name: str) -> np.ndarray:
    return load_gt(Path(voc_root) / "SegmentationClass", name)


def summed_confusion(names, voc_root: str, labels_of) -> np.ndarray:
    conf = 0
    for name in tqdm(names, desc="images"):
        gt = gt_mask(voc_root, name)
        conf = conf + confusion_matrix(gt, labels_of(name, gt))
    return conf


def print_scores(what: str, conf: np.ndarray, fold: int) -> None:
    s = scores_from_confusion(conf, fold)
    print(f"{what}: {summary_line(s, scanned=False)} (all/base/novel, fold {fold})")
    print("  " + "  ".join(f"{name}:{iou:.1f}" for name, iou in s.by_name().items()))


def affinity_auc(args, names) -> None:
    from retab.engines.stage_support import load_inference_model
    from retab.engines.walk_inference import affinity_features

    model, device = load_inference_model("aff", args.weights, args.width, args.device, backbone=args.backbone)
    novel = novel_labels(args.fold)
    groups = {"pairs touching a novel object": ([], []), "pictures without a novel object": ([], [])}
    for name in tqdm(names, desc="images"):
        gt = gt_mask(args.voc12_root, name)
        features = affinity_features(model, load_voc_image(args.voc12_root, name), device)
        aff, same, label_from, label_to = diagnostics.pair_label_agreement(features, gt)
        if np.isin(gt, novel).any():
            pick = np.isin(label_from, novel) | np.isin(label_to, novel)
            group = groups["pairs touching a novel object"]
        else:
            pick = np.ones_like(same)
            group = groups["pictures without a novel object"]
        group[0].append(aff[pick & same])
        group[1].append(aff[pick & ~same])
    for what, (pos, neg) in groups.items():
        pos = np.concatenate(pos) if pos else np.zeros(0)
        neg = np.concatenate(neg) if neg else np.zeros(0)
        # the walk moves score along a ** beta (before normalising): how far it spreads, not only the ranking
        weight = lambda a: float(np.mean(a ** args.beta)) if a.size else float("nan")
        print(f"{what}: AUC {diagnostics.auc(pos, neg):.3f} ({pos.size} same-label, {neg.size} different-label pairs;"
              f" mean a ** {args.beta:g} {weight(pos):.3f} / {weight(neg):.3f})")


def crf_label_quality(args, names) -> None:
    from retab.crf import crf_label_dicts
    from retab.data.datasets import base_label_grid, novel_label_grid

    try:
        pairs = [tuple(float(a) for a in pair.split(",")) for pair in args.crf_alphas]
    except ValueError:
        pairs = []
    if not pairs or any(len(pair) != 2 or min(pair) <= 0 for pair in pairs):
        raise RetabError(f"--crf_alphas takes LA,HA pairs of positive numbers, got {' '.join(args.crf_alphas)}")
    alphas = sorted({a for pair in pairs for a in pair})
    novel = novel_labels(args.fold)
    totals, pair_totals = {}, {}
    for name in tqdm(names, desc="images"):
        gt = gt_mask(args.voc12_root, name)
        image = np.asarray(load_voc_image(args.voc12_root, name), dtype=np.uint8)  # as infer_cls feeds the CRF
        crf = crf_label_dicts(image, load_score_dict(f"{args.cam_dir}/{name}.npy"), alphas=alphas)
        group = "novel pictures" if np.isin(gt, novel).any() else "base pictures"
        majority = diagnostics.cell_majority_labels(gt)
        gt_grid = base_label_grid(gt, majority.shape)  # the grid of every label set (H // 8, W // 8)
        grids = {"base GT, nearest": gt_grid}
        for la, ha in pairs:
            grid = novel_label_grid(crf[la], crf[ha])
            add_counts(totals, (group, la, ha), diagnostics.label_grid_counts(grid, gt_grid))
            grids[f"CRF {la:g},{ha:g}"] = grid
        for what, grid in grids.items():
            add_counts(pair_totals, (group, what), diagnostics.pair_label_accuracy(grid, majority))
    for (group, la, ha), c in sorted(totals.items()):
        print(f"{group}, LA_ALPHA {la:g} HA_ALPHA {ha:g}: sure foreground right {c['fg_right'] / max(c['fg_cells'], 1):.3f} "
              f"(recall {c['fg_right'] / max(c['gt_fg_cells'], 1):.3f}), "
              f"sure background right {c['bg_right'] / max(c['bg_cells'], 1):.3f}")
    print("pairs taught, and the share the GT's cell majority agrees with:")
    for (group, what), c in sorted(pair_totals.items()):
        kinds = ", ".join(f"{kind} {c[kind]} right {c[kind + '_right'] / max(c[kind], 1):.3f}"
                          for kind in diagnostics.PAIR_KINDS)
        print(f"  {group}, {what}: {kinds}; {c['labelled'] / max(c['reference'], 1):.2f} as many pairs as the GT")


def training_pair_counts(args, names) -> None:
    from retab.data.datasets import AffinityTrainDataset
    from retab.voc import fold_list

    base = set(read_name_list(fold_list(args.list_dir, args.fold, "base"))) & set(names)
    groups = {"base": [n for n in names if n in base], "novel": [n for n in names if n not in base]}
    common = dict(voc_root=args.voc12_root, crf_la_dir=args.la_crf_dir, crf_ha_dir=args.ha_crf_dir,
                  crop_size=args.crop_size, seed=args.seed)
    retab = dict(common, grid_sampling=args.grid_sampling)  # only RETAB's GT and target maps read it
    labellings = {  # (training, samples) -> the dataset that labels them as that training does
        ("PSA", "base"): AffinityTrainDataset(groups["base"], **common),
        ("PSA", "novel"): AffinityTrainDataset(groups["novel"], **common),
        ("RETAB", "base"): AffinityTrainDataset(groups["base"], base_names=base, **retab),
        ("RETAB", "novel"): AffinityTrainDataset(groups["novel"], boundary_target_dir=args.boundary_target_dir, **retab),
    }
    totals = {key: dict.fromkeys(diagnostics.PAIR_KINDS, 0) for key in labellings}
    for key, dataset in labellings.items():
        for epoch in range(args.epochs):
            dataset.set_epoch(epoch)
            for index in tqdm(range(len(dataset)), desc=f"{key[0]} {key[1]} epoch {epoch}", leave=False):
                add_counts(totals, key, diagnostics.taught_pairs(dataset.sample_with_grid(index)[1]))
    print("pairs taught per crop (" + " / ".join(diagnostics.PAIR_KINDS) + "), and the novel samples' share:")
    for training in ("PSA", "RETAB"):
        for group, group_names in groups.items():
            crops = len(group_names) * args.epochs
            per_crop = (totals[training, group][kind] / max(crops, 1) for kind in diagnostics.PAIR_KINDS)
            print(f"  {training}, {group} samples ({crops} crops): " + " / ".join(f"{x:.1f}" for x in per_crop))
        novel, base_pairs = totals[training, "novel"], totals[training, "base"]
        shares = (novel[kind] / max(novel[kind] + base_pairs[kind], 1) for kind in diagnostics.PAIR_KINDS)
        print(f"  {training}, novel share: " + " / ".join(f"{x:.3f}" for x in shares))


def boundary_map_coverage(args, names) -> None:
    novel = set(novel_labels(args.fold))
    totals = {}
    for name in tqdm(names, desc="images"):
        target = load_label_png(Path(args.boundary_target_dir) / f"{name}.png")
        for label, counts in diagnostics.boundary_flag_counts(gt_mask(args.voc12_root, name), target).items():
            add_counts(totals, "novel" if label in novel else "base", counts)
    for group in ("base", "novel"):
        c = totals.get(group)
        if c:
            outline, interior = (100 * c[f"{part}_flagged"] / max(c[part], 1) for part in ("outline", "interior"))
            print(f"{group} objects: outline {outline:.2f} % flagged ({c['outline']} px within 3 px), interior "
                  f"{interior:.2f} % flagged ({c['interior']} px over 4 px inside) (fold {args.fold})")


def cam_labels(cam_dir: str, voc_root: str, name: str, shape, threshold: float) -> np.ndarray:
    """The CAMs' labels at a background threshold, as the evaluation scores them (object where its score > t)."""
    label, score = best_object_channel(Path(cam_dir) / f"{name}.npy", "npy", shape,
                                       Path(voc_root) / "SegmentationClass", name)
    return np.where(score > threshold, label, 0).astype(np.uint8)


def label_changes(args, names) -> None:
    novel = set(novel_labels(args.fold))
    totals = {}
    for name in tqdm(names, desc="images"):
        gt = gt_mask(args.voc12_root, name)
        before = cam_labels(args.cam_dir, args.voc12_root, name, gt.shape, args.threshold)
        after = load_label_png(Path(args.labels_dir) / f"{name}.png")
        for label, counts in diagnostics.label_change_counts(gt, before, after).items():
            add_counts(totals, "novel" if label in novel else "base", counts)
    for group in ("base", "novel"):
        c = totals.get(group)
        if c:
            share = {k: 100 * v / max(c["gt"], 1) for k, v in c.items()}
            print(f"{group} objects ({c['gt']} GT px), % of them: filled {share['filled']:.2f}, lost "
                  f"{share['lost']:.2f}, leaks removed {share['leak_removed']:.2f}, leaks added "
                  f"{share['leak_added']:.2f} (CAM threshold {args.threshold:g}, fold {args.fold})")


def add_counts(totals: dict, key, counts: dict) -> None:
    total = totals.setdefault(key, dict.fromkeys(counts, 0))
    for name, value in counts.items():
        total[name] += value


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("what", choices=["ceiling", "perfect_affinity", "affinity_auc", "crf_labels", "training_pairs",
                                     "boundary_maps", "label_changes"])
    p.add_argument("--voc12_root", required=True)
    p.add_argument("--list", required=True)
    p.add_argument("--fold", type=int, default=0)
    p.add_argument("--cam_dir", help="CAM dicts (perfect_affinity, crf_labels, label_changes)")
    p.add_argument("--threshold", type=float, help="the CAMs' background threshold (label_changes)")
    p.add_argument("--labels_dir", help="a walk's label PNGs (label_changes)")
    p.add_argument("--crf_alphas", nargs="+", default=["4,32"], help="LA,HA pairs (crf_labels)")
    p.add_argument("--la_crf_dir", help="la CRF dicts (training_pairs)")
    p.add_argument("--ha_crf_dir", help="ha CRF dicts (training_pairs)")
    p.add_argument("--boundary_target_dir", help="boundary target maps (boundary_maps; training_pairs: none "
                                                 "leaves RETAB's novel labels unmasked)")
    p.add_argument("--list_dir", default="voc12", help="folder of the fold lists (training_pairs)")
    p.add_argument("--crop_size", type=int, default=448, help="affinity training crop (training_pairs)")
    p.add_argument("--epochs", type=int, default=1, help="epochs of crops (training_pairs)")
    p.add_argument("--seed", type=int, default=0, help="training seed (training_pairs)")
    add_grid_sampling_arg(p, "RETAB's GT masks and target maps (training_pairs)")
    p.add_argument("--alpha", type=float, default=published.WALK_ALPHA)
    p.add_argument("--beta", type=float, default=published.WALK_BETA, help="the walk's affinity exponent (affinity_auc)")
    p.add_argument("--logt", type=int, default=published.WALK_LOGT)
    p.add_argument("--weights", help="affinity net (affinity_auc)")
    p.add_argument("--width", type=float, default=1.0)
    p.add_argument("--backbone", default="resnet38", help="resnet38 | efficientnet_lite0 (affinity_auc)")
    p.add_argument("--device", default="cpu")
    args = p.parse_args(argv)
    try:
        return run(p, args)
    except RetabError as exc:  # bad input: one line, as the stages report it
        print(f"walk_diagnostics: error: {exc}", file=sys.stderr)
        return 2


def run(p: argparse.ArgumentParser, args) -> int:
    names = read_name_list(args.list)
    if args.what == "ceiling":
        conf = summed_confusion(names, args.voc12_root, lambda name, gt: diagnostics.grid_ceiling_labels(gt))
        print_scores("stride-8 ceiling", conf, args.fold)
    elif args.what == "perfect_affinity":
        if not args.cam_dir:
            p.error("perfect_affinity needs --cam_dir")
        conf = summed_confusion(names, args.voc12_root, lambda name, gt: diagnostics.perfect_affinity_labels(
            load_score_dict(f"{args.cam_dir}/{name}.npy"), gt, alpha=args.alpha, logt=args.logt))
        print_scores(f"walk with a perfect affinity (alpha {args.alpha:g}, logt {args.logt})", conf, args.fold)
    elif args.what == "crf_labels":
        if not args.cam_dir:
            p.error("crf_labels needs --cam_dir")
        crf_label_quality(args, names)
    elif args.what == "training_pairs":
        if not (args.la_crf_dir and args.ha_crf_dir):
            p.error("training_pairs needs --la_crf_dir and --ha_crf_dir")
        training_pair_counts(args, names)
    elif args.what == "boundary_maps":
        if not args.boundary_target_dir:
            p.error("boundary_maps needs --boundary_target_dir")
        boundary_map_coverage(args, names)
    elif args.what == "label_changes":
        if not (args.cam_dir and args.labels_dir and args.threshold is not None):
            p.error("label_changes needs --cam_dir, --threshold and --labels_dir")
        label_changes(args, names)
    else:
        if not args.weights:
            p.error("affinity_auc needs --weights")
        affinity_auc(args, names)
    return 0


if __name__ == "__main__":
    sys.exit(main())
