"""The CUDA paths against the CPU ones (skipped where no GPU is present; CI has none, so these run
through `tools/gpu_check.sh` on a lent GPU machine).

On CUDA, convolutions may use TF32 and cuDNN picks its own algorithms, so results agree with the
CPU to a stated tolerance, not bit for bit; the random walk (float32 affinities, float64 walk)
agrees to 1e-5 relative (measured 3.5e-7 on an H200) and gives the same labels.
"""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch

from retab.cam import multiscale_cam
from retab.misc.precision import Precision, apply_precision
from retab.random_walk import MODES, labels_from_scores, random_walk, stage1_scores

import test_distributed
from test_distributed import calibrated_classifier, child_env, train_cls_argv
from test_random_walk import synthetic_image

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
CUDA = torch.device("cuda")
tree = test_distributed.tree  # the small VOC tree and runner of the distributed tests (a fixture)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("size", [(60, 84), (375, 500)])
def test_random_walk_on_cuda_equals_cpu(mode, size):
    features, cams, nonboundary = synthetic_image(*size, seed=5)
    scores = stage1_scores(cams, *size)
    nb = None if mode == "psa" else nonboundary
    cpu = random_walk(features, scores, sorted(cams), mode, nb)
    gpu = random_walk(features.to(CUDA), scores, sorted(cams), mode, nb)
    np.testing.assert_allclose(gpu, cpu, rtol=1e-5, atol=0)
    np.testing.assert_array_equal(labels_from_scores(gpu), labels_from_scores(cpu))


def _image(h, w, seed=0):
    from PIL import Image
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))


def test_cams_on_cuda_match_cpu():
    """Multi-scale + flip CAMs of one network on both devices (fp32, TF32 off): 1e-4 of the peak."""
    model = calibrated_classifier().eval()
    img = _image(53, 71)
    labels = np.zeros(20, np.float32)
    labels[[3, 14]] = 1
    cpu = multiscale_cam(model.cam, img, labels, (1.0, 0.5, 1.5), "cpu")
    tf32 = torch.backends.cudnn.allow_tf32
    torch.backends.cudnn.allow_tf32 = False
    try:
        gpu = multiscale_cam(model.to(CUDA).cam, img, labels, (1.0, 0.5, 1.5), CUDA)
    finally:
        torch.backends.cudnn.allow_tf32 = tf32
    assert sorted(gpu) == sorted(cpu) == [3, 14]
    for k in cpu:
        assert gpu[k].shape == cpu[k].shape == (53, 71)
        np.testing.assert_allclose(gpu[k], cpu[k], atol=1e-4)


@pytest.mark.parametrize("amp,corr,logit_share", [("bf16", 0.95, 0.10), ("fp16", 0.99, 0.02)])
def test_amp_on_cuda_is_close_to_fp32(amp, corr, logit_share):
    """--amp on CUDA gives float32 outputs close to the float32 network's. Tolerances as in
    test_distributed's bf16 test (an untrained deep network amplifies rounding: ~10-15 % at conv6 in
    bf16); fp16 keeps 3 more mantissa bits, so it is held ~8x tighter."""
    model = calibrated_classifier().eval().to(CUDA)
    fast = apply_precision(model, Precision(amp), CUDA)
    x = torch.randn(2, 3, 64, 80, device=CUDA)
    with torch.no_grad():
        ref_cam, cam = model.cam(x), fast.cam(x)
        ref_logits, logits = model(x), fast(x)
    assert cam.dtype == logits.dtype == torch.float32 and cam.shape == ref_cam.shape
    assert np.corrcoef(cam.flatten().cpu().numpy(), ref_cam.flatten().cpu().numpy())[0, 1] > corr
    spread = ref_logits.max() - ref_logits.min()
    assert (logits - ref_logits).abs().max() <= logit_share * spread


def _launch(tree, argv, nproc=1, **env):
    """The test_distributed runner (dropout off: CPU and CUDA draw different masks)."""
    cmd = [sys.executable] + (["-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}"]
                              if nproc > 1 else [])
    proc = subprocess.run(cmd + [str(tree / "runner.py"), "--no-dropout"] + argv, cwd=tree, env={**child_env(tree), **env},
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    return proc


@pytest.mark.parametrize("variant", ["cuda", "cuda_fp16", "nccl"])
def test_train_cls_on_cuda_follows_the_cpu_run(tree, variant):
    """train_cls on CUDA (alone, with --amp fp16 and its GradScaler, and as two processes with
    nccl where two GPUs exist) against the CPU run: after 4 SGD steps the float32 weights differ from
    the CPU ones by under 2 % of how far training moved them (TF32 off), the fp16 ones travel the
    same way, and the checkpoint keeps the published keys."""
    nproc = 2 if variant == "nccl" else 1
    # float32 runs compare without TF32 (cuDNN's default for convolutions; its 10-bit mantissa
    # moved fc8 by ~10 % of its 4-step travel on an H200): what is left is summation order
    env = {} if variant == "cuda_fp16" else {"NVIDIA_TF32_OVERRIDE": "0"}
    if torch.cuda.device_count() < nproc:
        pytest.skip("nccl needs a GPU per process")
    cpu_out, out = tree / "cpu_ref", tree / variant
    if not (cpu_out / "cls.pth").exists():
        _launch(tree, train_cls_argv(tree, cpu_out, "--val_list", ""))
    argv = train_cls_argv(tree, out, "--val_list", "")
    argv[argv.index("--device") + 1] = "cuda"
    if variant == "cuda_fp16":
        argv += ["--amp", "fp16"]
    proc = _launch(tree, argv, nproc, **env)
    if variant == "nccl":
        assert "nccl" in proc.stderr
    a = torch.load(cpu_out / "cls.pth", weights_only=True)
    b = torch.load(out / "cls.pth", weights_only=True)
    init = torch.load(tree / "cls_init.pth", weights_only=True)
    assert list(a) == list(b) == list(init)
    steps = torch.load(out / "cls.last.pt", weights_only=True)["optimizer"]["poly"]["global_step"]
    for k in ("fc8.weight", "b3.conv_branch2a.weight", "b7.conv_branch2b2.weight"):
        moved = (a[k] - init[k]).abs().max()
        assert moved > 0
        if variant == "cuda_fp16":
            # the GradScaler may skip the first steps (gradients overflow at its initial scale of
            # 2**16) and then the run takes fewer steps: ask for the same direction of travel
            assert 1 <= steps <= 4
            da, db = (a[k] - init[k]).flatten(), (b[k].cpu() - init[k]).flatten()
            assert torch.nn.functional.cosine_similarity(da, db, dim=0) > 0.9, k
        else:
            assert steps == 4
            assert (b[k].cpu() - a[k]).abs().max() <= 0.02 * moved, k


def test_plain_cuda_names_the_current_gpu():
    from retab.misc.distributed import process_device
    assert process_device("cuda") == torch.device("cuda", torch.cuda.current_device())
    assert process_device("auto").type == "cuda"
