"""Several processes under torchrun (CPU, gloo) and the opt-in speed flags: the data split and
gradient averaging of distributed training against one process, resume, rank-0-only outputs,
sharded per-image inference against one process (byte for byte), skipping in shards, --amp and
--channels_last tolerances, and bad input."""
from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from retab import voc
from retab.cam import multiscale_cam, multiscale_cams
from retab.cli import main as cli_main
from retab.misc import distributed
from retab.misc.errors import RetabError
from retab.misc.fileio import load_score_dict, save_score_dict
from retab.misc.precision import Precision, apply_precision, state_dict_for_saving
from retab.models import build_model
from retab.models.weights import load_weights, save_checkpoint
from retab.engines.stage_support import calibrate_batchnorm
from retab.engines.training import TrainConfig, make_loader

REPO = Path(__file__).resolve().parents[1]
WIDTH = 0.125
LAUNCH_ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")

# name -> (height, width, class indices); a few sizes repeat (for --cam_batch), one list is odd-sized
IMAGES = {
    "2007_000101": (40, 48, [0]),
    "2007_000102": (48, 40, [6, 14]),
    "2007_000103": (40, 48, [11]),
    "2007_000104": (44, 52, [16]),
    "2007_000105": (40, 48, [0, 11]),
    "2007_000106": (48, 40, [19]),
    "2007_000107": (36, 44, [14]),
    "2007_000108": (44, 52, [6]),
    "2007_000109": (40, 48, [3]),   # val
    "2007_000110": (48, 40, [8]),   # val
    "2007_000111": (36, 44, [12]),  # val
}
TRAIN = sorted(IMAGES)[:8]
VAL = sorted(IMAGES)[8:]


def build_voc(root: Path) -> Path:
    """Images with a class-coloured block on noise, their XML annotations and GT masks."""
    rng = np.random.default_rng(0)
    for folder in ("JPEGImages", "Annotations", "SegmentationClassAug"):
        (root / folder).mkdir(parents=True, exist_ok=True)
    palette = np.array(voc.voc_palette()[:63], np.float64).reshape(21, 3)
    for name, (h, w, classes) in IMAGES.items():
        image = rng.normal(110, 25, (h, w, 3))
        mask = np.zeros((h, w), np.uint8)
        for i, k in enumerate(classes):
            top, left = 4 + 10 * i, 6 + 8 * i
            image[top:top + h // 2, left:left + w // 2] = palette[k + 1] * 0.8 + 30
            mask[top:top + h // 2, left:left + w // 2] = k + 1
        Image.fromarray(np.clip(image, 0, 255).astype(np.uint8)).save(voc.image_path(root, name), quality=95)
        objects = "".join(f"<object><name>{voc.CATEGORIES[k]}</name></object>" for k in classes)
        voc.xml_path(root, name).write_text(f"<annotation>{objects}</annotation>")
        Image.fromarray(mask).save(voc.mask_path(root, name))
    return root


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("dist")
    build_voc(tmp / "VOC2012")
    (tmp / "train.txt").write_text("".join(n + "\n" for n in TRAIN))
    (tmp / "val.txt").write_text("".join(n + "\n" for n in VAL))
    (tmp / "all.txt").write_text("".join(n + "\n" for n in sorted(IMAGES)))
    save_checkpoint(tmp / "cls_init.pth", calibrated_classifier())
    # a runner that switches dropout off: see test_two_processes_train_what_one_process_trains
    (tmp / "runner.py").write_text(
        "import sys\nimport torch\n"
        "if '--no-dropout' in sys.argv:\n"
        "    sys.argv.remove('--no-dropout')\n"
        "    torch.nn.Dropout2d.forward = lambda self, x: x\n"
        "if '--stop-at-step' in sys.argv:\n"
        "    i = sys.argv.index('--stop-at-step'); stop = int(sys.argv[i + 1]); del sys.argv[i:i + 2]\n"
        "    from retab.stages import train_cls\n"
        "    real, calls = train_cls.cls_step, []\n"
        "    def step(model, batch, device):\n"
        "        if len(calls) == stop:\n"
        "            raise KeyboardInterrupt\n"
        "        calls.append(1)\n"
        "        return real(model, batch, device)\n"
        "    train_cls.cls_step = step\n"
        "from retab.cli import main\n"
        "sys.exit(main(sys.argv[1:]))\n")
    return tmp


def calibrated_classifier(seed: int = 0):
    """A width-0.125 classifier whose (frozen) BatchNorms carry statistics of normalised-image-like
    inputs, so that its activations and gradients have their usual magnitudes (those of a fresh
    network fade with depth)."""
    torch.manual_seed(seed)
    model = build_model("cls", WIDTH)
    images = torch.randn(8, 3, 48, 48)
    calibrate_batchnorm(model, [(images[i], torch.zeros(20)) for i in range(8)],
                        TrainConfig(session_name="c", max_epoches=1, batch_size=4), torch.device("cpu"))
    return model


def child_env(tree: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in LAUNCH_ENV}
    scratch = tree / "scratch"  # torchrun's torchelastic_* folders stay in the test's tree, not in /tmp
    scratch.mkdir(exist_ok=True)
    env["TMPDIR"] = str(scratch)
    env["OMP_NUM_THREADS"] = "1"
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO / "src"), os.environ.get("PYTHONPATH")]))
    return env


def launch(tree: Path, argv: list[str], nproc: int, expect_rc: int = 0) -> subprocess.CompletedProcess:
    """The runner in one process, or in `nproc` processes under torchrun (standalone, CPU)."""
    runner = [str(tree / "runner.py")]
    if nproc > 1:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}"] + runner
    else:
        cmd = [sys.executable] + runner
    proc = subprocess.run(cmd + argv, cwd=tree, env=child_env(tree), capture_output=True, text=True, timeout=300)
    assert proc.returncode == expect_rc, proc.stdout[-3000:] + proc.stderr[-5000:]
    return proc


def train_cls_argv(tree: Path, out: Path, *extra) -> list[str]:
    return ["train_cls", "--voc12_root", str(tree / "VOC2012"), "--train_list", str(tree / "train.txt"),
            "--val_list", str(tree / "val.txt"), "--weights", str(tree / "cls_init.pth"),
            "--batch_size", "4", "--max_epoches", "2", "--crop_size", "32", "--resize_long", "32", "48",
            "--lr", "0.1", "--num_workers", "0", "--session_name", "cls", "--out_dir", str(out),
            "--tblog_dir", str(out / "tb"), "--device", "cpu", "--seed", "3", "--width", str(WIDTH), *extra]


def val_losses(text: str) -> list[float]:
    return [float(line.rsplit("val loss ", 1)[1].split()[0]) for line in text.splitlines() if "val loss" in line]


# ----------------------------------------------------------------------------- training

@pytest.mark.slow
def test_two_processes_train_what_one_process_trains(tree):
    """train_cls, global batch 4: one process, and two processes of 2 images each.

    Each process takes its half of every batch of the single-process run, and the classification
    loss is a mean over images, so the averaged gradients are the single-process ones up to
    float32 rounding (summation order, which depends on the CPU's kernels): after 4 SGD steps the
    weights agree to 1e-5 (measured 2e-8 on an AMD EPYC, 3e-6 on an Intel Xeon) while training moved
    them by up to 4e-2 (fc8) and 1e-2 (b3). Dropout is switched off in
    both runs: its masks are drawn per process and cannot match one process's draws."""
    single, double = tree / "single", tree / "double"
    one = launch(tree, train_cls_argv(tree, single, "--no-dropout"), 1)
    two = launch(tree, train_cls_argv(tree, double, "--no-dropout"), 2)

    a = torch.load(single / "cls.pth", weights_only=True)
    b = torch.load(double / "cls.pth", weights_only=True)
    init = torch.load(tree / "cls_init.pth", weights_only=True)
    assert list(a) == list(b) == list(init)  # published keys, no `module.` prefix
    for k in a:
        torch.testing.assert_close(b[k], a[k], rtol=0, atol=1e-5, msg=k)
    assert (a["fc8.weight"] - init["fc8.weight"]).abs().max() > 1e-2
    assert (a["b3.conv_branch2a.weight"] - init["b3.conv_branch2a.weight"]).abs().max() > 1e-3
    # the published keys load strictly
    assert load_weights(build_model("cls", WIDTH), double / "cls.pth", strict=True).clean

    # rank 0 alone wrote the outputs: one checkpoint pair, one TensorBoard file, no leftovers
    assert sorted(p.name for p in double.iterdir()) == ["cls.last.pt", "cls.pth", "tb"]
    assert len(list((double / "tb").iterdir())) == 1
    last = torch.load(double / "cls.last.pt", weights_only=True)
    assert last["epoch"] == 2 and last["optimizer"]["poly"]["global_step"] == 4  # 8 images / 4 x 2 epochs
    # validation: 3 images shared 2 + 1 between the processes, summed: the same loss per epoch
    assert len(val_losses(two.stderr)) == 2
    np.testing.assert_allclose(val_losses(two.stderr), val_losses(one.stderr), atol=2e-4)
    assert "process 0 of 2" in two.stderr and "process 1 of 2" not in two.stderr  # rank 0 logs


@pytest.mark.slow
def test_two_processes_resume_as_if_never_interrupted(tree):
    """With dropout (drawn per process from seed, epoch and rank): an interrupted two-process run,
    resumed in two processes, ends with the weights of the uninterrupted one, bit for bit."""
    straight, interrupted = tree / "straight", tree / "interrupted"
    launch(tree, train_cls_argv(tree, straight, "--val_list", ""), 2)
    # interrupted at the first step of epoch 2 (2 steps per epoch): both processes stop there
    launch(tree, train_cls_argv(tree, interrupted, "--val_list", "", "--stop-at-step", "2"), 2, expect_rc=1)
    assert not (interrupted / "cls.pth").exists()
    assert torch.load(interrupted / "cls.last.pt", weights_only=True)["epoch"] == 1
    launch(tree, train_cls_argv(tree, interrupted, "--val_list", "", "--resume"), 2)
    a = torch.load(straight / "cls.pth", weights_only=True)
    b = torch.load(interrupted / "cls.pth", weights_only=True)
    assert list(a) == list(b) and all(torch.equal(a[k], b[k]) for k in a)


def test_sharded_batches_are_the_single_process_batches_split():
    """ShardedBatchSampler against the real single-process DataLoader (same seed and epoch): the
    processes' k-th batches, put together, are its k-th batch, for every epoch."""
    dataset = list(range(23))  # 23 = 5 batches of 4 and 3 left over (dropped by both)
    cfg = TrainConfig(session_name="s", max_epoches=3, batch_size=4, seed=7)
    for epoch in range(3):
        loader = make_loader(dataset, 4, True, 0, cfg.seed)
        loader.generator.manual_seed(cfg.seed * 1000 + epoch)
        single = [b.tolist() for b in loader]
        parts = []
        for rank in range(2):
            sampler = distributed.ShardedBatchSampler(len(dataset), 4, cfg.seed * 1000,
                                                      distributed.ProcessInfo(rank, 2))
            sampler.set_epoch(epoch)
            parts.append([[int(i) for i in b] for b in make_loader(dataset, 4, True, 0, cfg.seed,
                                                                   batch_sampler=sampler)])
        assert len(single) == len(parts[0]) == len(parts[1]) == 5
        assert [p0 + p1 for p0, p1 in zip(*parts)] == single
    assert single != [list(range(i, i + 4)) for i in range(0, 20, 4)]  # it did shuffle


def test_global_batch_must_divide_and_fill():
    assert distributed.per_process_batch(8, 2) == 4 and distributed.per_process_batch(8, 1) == 8
    with pytest.raises(RetabError, match="--batch_size 6 .* divisible by the 4 processes"):
        distributed.per_process_batch(6, 4)
    with pytest.raises(RetabError, match="3 training images are fewer than one global batch of 4"):
        distributed.ShardedBatchSampler(3, 4, 0, distributed.ProcessInfo(0, 2))


def test_launch_environment_is_read_and_checked():
    assert distributed.process_info({}) == distributed.ProcessInfo()
    info = distributed.process_info({"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1", "LOCAL_WORLD_SIZE": "2"})
    assert (info.rank, info.world_size, info.local_rank, info.local_world_size) == (3, 4, 1, 2)
    assert info.distributed and not info.is_main
    with pytest.raises(RetabError, match="incomplete torchrun environment: RANK set but WORLD_SIZE, LOCAL_RANK"):
        distributed.process_info({"RANK": "0"})
    with pytest.raises(RetabError, match="RANK=2 does not lie in 0..WORLD_SIZE-1"):
        distributed.process_info({"RANK": "2", "WORLD_SIZE": "2", "LOCAL_RANK": "0"})
    with pytest.raises(RetabError, match="WORLD_SIZE='two' is not an integer"):
        distributed.process_info({"RANK": "0", "WORLD_SIZE": "two", "LOCAL_RANK": "0"})
    names = [f"n{i}" for i in range(7)]
    shares = [distributed.shard(names, distributed.ProcessInfo(r, 3)) for r in range(3)]
    assert shares == [names[0::3], names[1::3], names[2::3]]
    assert distributed.default_workers(8, distributed.ProcessInfo(0, 4, 0, 4)) == 2
    assert distributed.default_workers(2, distributed.ProcessInfo(0, 4, 0, 4)) == 1


def test_dropout_streams_differ_between_processes_and_repeat():
    draws = {}
    for rank in (0, 1, 0):
        distributed.seed_process(3, 1, rank)
        draws.setdefault(rank, []).append(torch.rand(4))
    assert torch.equal(draws[0][0], draws[0][1]) and not torch.equal(draws[0][0], draws[1][0])


# ----------------------------------------------------------------------------- inference

def infer_cls_argv(tree: Path, out: Path, *extra) -> list[str]:
    return ["infer_cls", "--weights", str(tree / "cls_init.pth"), "--width", str(WIDTH),
            "--voc12_root", str(tree / "VOC2012"), "--infer_list", str(tree / "all.txt"),
            "--scales", "1.0", "0.5", "--out_cam", str(out / "cam"), "--out_la_crf", str(out / "la"),
            "--out_ha_crf", str(out / "ha"), "--out_cam_pred", str(out / "pred"),
            "--device", "cpu", "--num_workers", "0", "--crf_workers", "0", *extra]


def files_of(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.slow
def test_two_inference_processes_write_the_files_of_one(tree):
    single, double = tree / "cam_single", tree / "cam_double"
    launch(tree, infer_cls_argv(tree, single), 1)
    launch(tree, infer_cls_argv(tree, double), 2)
    expected = files_of(single)
    assert len(expected) == 4 * len(IMAGES)
    assert files_of(double) == expected  # the same names, byte for byte (CAM and CRF dicts, PNGs)

    # a rerun in two processes writes exactly the missing outputs, the same bytes again
    removed = [double / "cam" / f"{TRAIN[0]}.npy", double / "la" / f"{TRAIN[3]}.npy",
               double / "pred" / f"{TRAIN[4]}.png", double / "ha" / f"{VAL[2]}.npy"]
    for path in removed:
        path.unlink()
    kept = {p: p.stat().st_mtime_ns for p in double.rglob("*") if p.is_file()}
    launch(tree, infer_cls_argv(tree, double), 2)
    assert files_of(double) == expected
    assert {p: p.stat().st_mtime_ns for p in kept} == kept


@pytest.fixture()
def as_process(monkeypatch):
    """Run a stage in this process as rank `rank` of `world` (inference never talks to the other
    processes, so the ranks can run one after the other); the logger level is restored after."""
    level = logging.getLogger("retab").level

    def set_rank(rank: int, world: int):
        for key, value in {"RANK": rank, "WORLD_SIZE": world, "LOCAL_RANK": rank, "LOCAL_WORLD_SIZE": world}.items():
            monkeypatch.setenv(key, str(value))

    yield set_rank
    logging.getLogger("retab").setLevel(level)


def sharded_equals_single(as_process, run, out_single: Path, out_shared: Path) -> None:
    run(out_single)
    for rank in (1, 0):
        as_process(rank, 2)
        run(out_shared)
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE"):
        os.environ.pop(key, None)
    expected = files_of(out_single)
    assert len(expected) >= len(IMAGES) and files_of(out_shared) == expected


def test_every_per_image_stage_shards_into_the_single_process_files(tree, tmp_path, as_process):
    """prop_boundary_target, infer_seg and the three random walks, as rank 1 then rank 0 of 2."""
    torch.manual_seed(5)
    save_checkpoint(tmp_path / "boundary.pth", build_model("boundary", WIDTH))
    save_checkpoint(tmp_path / "seg.pth", build_model("seg", WIDTH))
    save_checkpoint(tmp_path / "aff.pth", build_model("aff", WIDTH))
    voc_root, names = tree / "VOC2012", tree / "all.txt"
    common = ["--voc12_root", str(voc_root), "--infer_list", str(names), "--device", "cpu",
              "--num_workers", "0", "--width", str(WIDTH)]
    # inputs of the walks: CAM-like dicts, stage-1-like dicts and boundary maps of every image
    rng = np.random.default_rng(1)
    for name, (h, w, classes) in IMAGES.items():
        cams = {k: rng.random((h, w)).astype(np.float32) for k in classes}
        save_score_dict(tmp_path / "cams" / f"{name}.npy", cams)
        save_score_dict(tmp_path / "stage1" / f"{name}.npy", {0: rng.random((h, w)).astype(np.float32),
                                                               **{k + 1: c for k, c in cams.items()}})
        target = np.where(rng.random((h, w)) < 0.8, 255, 0).astype(np.uint8)
        Image.fromarray(target).save(tmp_path / "cams" / f"{name}.png")

    def stage(argv):
        return lambda out: cli_main(argv(out)) == 0 or pytest.fail(f"{argv(out)}")

    runs = {
        "prop_boundary_target": lambda out: ["prop_boundary_target", "--weights", str(tmp_path / "boundary.pth"),
                                             "--out_dir", str(out), *common],
        "infer_seg": lambda out: ["infer_seg", "--weights", str(tmp_path / "seg.pth"), "--scales", "1.0", "0.5",
                                  "--out_dir", str(out), *common],
        "infer_aff": lambda out: ["infer_aff", "--weights", str(tmp_path / "aff.pth"), "--cam_dir",
                                  str(tmp_path / "cams"), "--out_rw", str(out / "rw"), "--out_rw_cam",
                                  str(out / "rw_cam"), *common],
        "stage1": lambda out: ["infer_aff_cam_boundary", "--weights", str(tmp_path / "aff.pth"), "--cam_dir",
                               str(tmp_path / "cams"), "--targetpixel_dir", str(tmp_path / "cams"),
                               "--out_rw", str(out / "rw"), "--out_rw_cam", str(out / "rw_cam"), *common],
        "stage2": lambda out: ["infer_aff_cam_boundary_secondary", "--weights", str(tmp_path / "aff.pth"),
                               "--cam_dir", str(tmp_path / "stage1"), "--targetpixel_dir", str(tmp_path / "cams"),
                               "--out_rw", str(out / "rw"), *common],
    }
    for key, argv in runs.items():
        sharded_equals_single(as_process, stage(argv), tmp_path / key / "single", tmp_path / key / "shared")


# ----------------------------------------------------------------------------- --amp, --channels_last, --cam_batch

@pytest.fixture(scope="module")
def calibrated_cls():
    return calibrated_classifier().eval()


def cam_dicts(cam_fn, tree):
    out = {}
    for name in TRAIN[:4]:
        labels = np.zeros(20, np.float32)
        labels[IMAGES[name][2]] = 1
        img = voc.load_image(voc.image_path(tree / "VOC2012", name))
        out[name] = multiscale_cam(cam_fn, img, labels, scales=(1.0, 0.5, 1.5))
    return out


@pytest.mark.parametrize("kind", ["cls", "aff", "boundary", "seg"])
def test_channels_last_gives_the_same_outputs(calibrated_cls, kind):
    """Every network in the NHWC layout: outputs within 1e-5 of their largest magnitude (float32
    convolutions summed in another order; measured <= 5e-6 for 3 seeds), float32, contiguous;
    the state dict saved is the ordinary contiguous one with the same values."""
    reference = build_model(kind, WIDTH)
    reference.load_state_dict(calibrated_cls.state_dict(), strict=False)  # the calibrated backbone
    reference.eval()
    fast = apply_precision(build_model(kind, WIDTH), Precision(channels_last=True), "cpu")
    fast.model.load_state_dict(reference.state_dict())
    fast.eval()
    assert fast.model.conv1a.weight.is_contiguous(memory_format=torch.channels_last)
    x = torch.randn(2, 3, 40, 56, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        pairs = [(reference(x), fast(x))]
        if kind == "cls":
            pairs.append((reference.cam(x), fast.cam(x)))
    for expected, got in pairs:
        assert got.dtype == torch.float32 and got.is_contiguous()
        torch.testing.assert_close(got, expected, rtol=0, atol=1e-5 * float(expected.abs().max()))
    state = state_dict_for_saving(fast.model)
    assert all(v.is_contiguous() for v in state.values())
    assert all(torch.equal(state[k], v) for k, v in reference.state_dict().items())


def test_channels_last_gives_the_same_cam_dicts(calibrated_cls, tree):
    """Multi-scale CAM dicts (maps in [0, 1]) in the NHWC layout: within 3e-5 (the network's
    ~5e-6 relative rounding, through upsampling, summing and max-normalising; measured <= 1.3e-5)."""
    fast = apply_precision(build_model("cls", WIDTH), Precision(channels_last=True), "cpu")
    fast.model.load_state_dict(calibrated_cls.state_dict())
    fast.eval()
    reference, got = cam_dicts(calibrated_cls.cam, tree), cam_dicts(fast.cam, tree)
    for name in reference:
        assert sorted(got[name]) == sorted(reference[name])
        for k in reference[name]:
            np.testing.assert_allclose(got[name][k], reference[name][k], rtol=0, atol=3e-5)


def test_bf16_autocast_keeps_cams_and_logits_close(calibrated_cls, tree):
    """Tolerance: bfloat16 keeps 8 bits of mantissa, so every convolution adds a relative error of
    a few 2**-9; measured on this random width-0.125 ResNet-38 the relative error grows by ~0.5%
    per residual block, to ~5% at conv4 and ~10-15% at conv6 (an untrained network has no margin
    that would absorb it). After max-normalisation the CAM maps (values in [0, 1]) of 3 seeds x 6
    images had correlation >= 0.96 with the float32 maps, mean |difference| <= 0.07 and label
    maps (background 0.2) agreeing on >= 93% of the pixels. The test asks for correlation > 0.95,
    mean |difference| < 0.1 and >= 90% equal labels; the logits (global average pool, which
    averages much of the noise away) were within 3.4% of their range for 3 seeds, the test asks for
    10%. Loose enough for that arithmetic, tight enough to catch a float16/bfloat16 output leaking into
    the aggregation, a flipped or misplaced pass, or a layer left out of the cast.
    """
    from retab.stages.infer_cls import cam_prediction

    fast = apply_precision(calibrated_cls, Precision(amp="bf16"), "cpu")
    reference, got = cam_dicts(calibrated_cls.cam, tree), cam_dicts(fast.cam, tree)
    for name in reference:
        h, w = IMAGES[name][:2]
        assert sorted(got[name]) == sorted(reference[name])
        for k in reference[name]:
            a, b = reference[name][k], got[name][k]
            assert b.dtype == np.float32
            corr = np.corrcoef(a.ravel(), b.ravel())[0, 1]
            assert corr > 0.95 and np.abs(a - b).mean() < 0.1, (name, k, corr, np.abs(a - b).mean())
        agree = cam_prediction(got[name], h, w, 0.2) == cam_prediction(reference[name], h, w, 0.2)
        assert agree.mean() >= 0.9, (name, agree.mean())
    x = torch.randn(2, 3, 40, 56, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected, logits = calibrated_cls(x), fast(x)
    assert logits.dtype == torch.float32
    assert float((logits - expected).abs().max()) < 0.1 * float(expected.max() - expected.min())


def test_batched_cams_equal_one_image_at_a_time(calibrated_cls, tree):
    names = [n for n in TRAIN if IMAGES[n][:2] == (40, 48)]
    assert len(names) == 3
    images = [voc.load_image(voc.image_path(tree / "VOC2012", n)) for n in names]
    labels = []
    for n in names:
        vector = np.zeros(20, np.float32)
        vector[IMAGES[n][2]] = 1
        labels.append(vector)
    labels[1] = np.zeros(20, np.float32)  # an image without classes gets {} and no batch slot
    batched = multiscale_cams(calibrated_cls.cam, images, labels, scales=(1.0, 0.5))
    for img, vector, got in zip(images, labels, batched):
        one = multiscale_cam(calibrated_cls.cam, img, vector, scales=(1.0, 0.5))
        assert sorted(got) == sorted(one)
        for k in one:
            np.testing.assert_allclose(got[k], one[k], rtol=0, atol=1e-6)
    with pytest.raises(RetabError, match="images of one size"):
        multiscale_cams(calibrated_cls.cam, [images[0], images[0].resize((30, 30))], labels[:2])


def test_infer_cls_cam_batch_and_speed_flags_write_close_outputs(tree, tmp_path):
    """--cam_batch 3 --channels_last against the defaults: the same files, CAMs within 3e-5 (two
    sources of float32 rounding, batched and NHWC convolutions, each ~1e-5 on maps in [0, 1])."""
    plain, fast = tmp_path / "plain", tmp_path / "fast"
    assert cli_main(infer_cls_argv(tree, plain)) == 0
    assert cli_main(infer_cls_argv(tree, fast, "--cam_batch", "3", "--channels_last")) == 0
    for name in IMAGES:
        a = load_score_dict(plain / "cam" / f"{name}.npy")
        b = load_score_dict(fast / "cam" / f"{name}.npy")
        assert sorted(a) == sorted(b)
        for k in a:
            np.testing.assert_allclose(b[k], a[k], rtol=0, atol=3e-5)
    assert sorted(files_of(fast)) == sorted(files_of(plain))


def test_a_bf16_training_step_matches_float32(tree, tmp_path, monkeypatch):
    """train_cls with --amp bf16 --channels_last for one SGD step on 4 images against float32
    (dropout off in both, so that only the arithmetic differs): the head's update has the same
    direction (cosine > 0.99) and size (within 5%), and the state dict written has the published
    keys, in the default layout. bf16 rounds each operation by up to 2**-9 relative; a gradient
    computed from half-precision activations keeps its direction well within these bounds."""
    monkeypatch.setattr(torch.nn.Dropout2d, "forward", lambda self, x: x)
    (tree / "four.txt").write_text("".join(n + "\n" for n in TRAIN[:4]))
    runs = {}
    for name, extra in (("fp32", []), ("bf16", ["--amp", "bf16", "--channels_last"])):
        out = tmp_path / name
        argv = train_cls_argv(tree, out, "--max_epoches", "1", "--val_list", "", "--tblog_dir", "",
                              "--train_list", str(tree / "four.txt"), *extra)
        assert cli_main(argv) == 0
        runs[name] = torch.load(out / "cls.pth", weights_only=True)
    init = torch.load(tree / "cls_init.pth", weights_only=True)
    assert list(runs["bf16"]) == list(init) and all(v.is_contiguous() for v in runs["bf16"].values())
    step_fp32 = runs["fp32"]["fc8.weight"] - init["fc8.weight"]
    step_bf16 = runs["bf16"]["fc8.weight"] - init["fc8.weight"]
    cosine = float((step_fp32 * step_bf16).sum() / (step_fp32.norm() * step_bf16.norm()))
    assert float(step_fp32.norm()) > 0
    assert cosine > 0.99 and 0.95 < float(step_bf16.norm() / step_fp32.norm()) < 1.05, cosine


# ----------------------------------------------------------------------------- bad input

def test_fp16_on_the_cpu_is_a_one_line_error(tree, tmp_path, capsys):
    assert cli_main(infer_cls_argv(tree, tmp_path / "o", "--amp", "fp16")) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--amp fp16 needs a CUDA device" in err and "bf16" in err
    assert cli_main(train_cls_argv(tree, tmp_path / "t", "--amp", "fp16")) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--amp fp16 needs a CUDA device" in err
    assert not (tmp_path / "o").exists() and not (tmp_path / "t").exists()
    with pytest.raises(RetabError, match="--amp must be one of none, bf16, fp16"):
        Precision(amp="fp8")


def test_nccl_on_the_cpu_and_an_indivisible_batch_are_one_line_errors(tree, tmp_path, capsys, monkeypatch,
                                                                       as_process):
    """Rank 0 of 3 or 2 alone: the checks fail before the process group would wait for the others."""
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    monkeypatch.setenv("MASTER_PORT", "1")  # never reached: the checks come first
    as_process(0, 3)
    assert cli_main(train_cls_argv(tree, tmp_path / "t")) == 2  # --batch_size 4
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--batch_size 4 is the global batch and must be divisible by the 3" in err
    as_process(0, 2)
    assert cli_main(train_cls_argv(tree, tmp_path / "t", "--dist_backend", "nccl")) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--dist_backend nccl needs CUDA devices" in err
    assert not distributed.is_initialized() and not (tmp_path / "t").exists()
