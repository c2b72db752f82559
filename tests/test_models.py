"""ResNet-38 and its heads (SPEC 2): published key names and shapes, output sizes, freezing,
checked weight loading, parameter groups and the poly-lr SGD with its momentum quirk."""
import logging
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from retab.misc.errors import RetabError
from retab.models import build_model
from retab.models.weights import load_state_dict_checked, load_weights, read_torch_file, save_checkpoint
from retab.optim import PolyAdamW, PolyOptimizer, make_optimizer, param_groups

# The SPEC 2 table, written out: (block, in, mid, out) for basic blocks; a projection shortcut
# exists where in != out or the block strides (the first block of b2, b3, b4).
BASIC_BLOCKS = (
    [("b2", 64, 128, 128)] + [(f"b2_{i}", 128, 128, 128) for i in (1, 2)]
    + [("b3", 128, 256, 256)] + [(f"b3_{i}", 256, 256, 256) for i in (1, 2)]
    + [("b4", 256, 512, 512)] + [(f"b4_{i}", 512, 512, 512) for i in range(1, 6)]
    + [("b5", 512, 512, 1024)] + [(f"b5_{i}", 1024, 512, 1024) for i in (1, 2)]
)
STRIDED = {"b2", "b3", "b4"}
BOTTLENECK_BLOCKS = [("b6", 1024, 2048), ("b7", 2048, 4096)]  # (block, in, out)


def bn_shapes(prefix, channels):
    return {f"{prefix}.weight": [channels], f"{prefix}.bias": [channels],
            f"{prefix}.running_mean": [channels], f"{prefix}.running_var": [channels],
            f"{prefix}.num_batches_tracked": []}


def expected_backbone_shapes():
    shapes = {"conv1a.weight": [64, 3, 3, 3]}
    for name, c_in, mid, out in BASIC_BLOCKS:
        shapes.update(bn_shapes(f"{name}.bn_branch2a", c_in))
        shapes[f"{name}.conv_branch2a.weight"] = [mid, c_in, 3, 3]
        shapes.update(bn_shapes(f"{name}.bn_branch2b1", mid))
        shapes[f"{name}.conv_branch2b1.weight"] = [out, mid, 3, 3]
        if c_in != out or name in STRIDED:
            shapes[f"{name}.conv_branch1.weight"] = [out, c_in, 1, 1]
    for name, c_in, out in BOTTLENECK_BLOCKS:
        shapes.update(bn_shapes(f"{name}.bn_branch2a", c_in))
        shapes[f"{name}.conv_branch1.weight"] = [out, c_in, 1, 1]
        shapes[f"{name}.conv_branch2a.weight"] = [out // 4, c_in, 1, 1]
        shapes.update(bn_shapes(f"{name}.bn_branch2b1", out // 4))
        shapes[f"{name}.conv_branch2b1.weight"] = [out // 2, out // 4, 3, 3]
        shapes.update(bn_shapes(f"{name}.bn_branch2b2", out // 2))
        shapes[f"{name}.conv_branch2b2.weight"] = [out, out // 2, 1, 1]
    shapes.update(bn_shapes("bn7", 4096))
    return shapes


def multi_level_head_shapes(f9_out):
    return {"f8_3.weight": [64, 512, 1, 1], "f8_4.weight": [128, 1024, 1, 1],
            "f8_5.weight": [256, 4096, 1, 1], "f9.weight": [f9_out, 448, 1, 1]}


def meta_model(kind, width=1.0):
    with torch.device("meta"):  # no memory is allocated for the weights
        return build_model(kind, width)


def shapes_of(model):
    return {k: list(v.shape) for k, v in model.state_dict().items()}


@pytest.mark.parametrize("kind, head", [
    ("cls", {"fc8.weight": [20, 4096, 1, 1]}),
    ("aff", multi_level_head_shapes(448)),
    ("boundary", multi_level_head_shapes(1)),
])
def test_full_width_keys_and_shapes_are_the_published_ones(kind, head):
    expected = expected_backbone_shapes() | head
    assert shapes_of(meta_model(kind)) == expected


def test_named_shapes_at_full_width():
    cls, aff, boundary = (shapes_of(meta_model(k)) for k in ("cls", "aff", "boundary"))
    assert cls["b5.conv_branch2a.weight"] == [512, 512, 3, 3]
    assert cls["b6.conv_branch2b1.weight"] == [1024, 512, 3, 3]
    assert cls["b7.conv_branch2b2.weight"] == [4096, 2048, 1, 1]
    assert cls["fc8.weight"] == [20, 4096, 1, 1]
    assert aff["f9.weight"] == [448, 448, 1, 1]
    assert boundary["f9.weight"] == [1, 448, 1, 1]


def test_strides_and_dilations_follow_the_table():
    model = meta_model("cls")
    for name in ("b2", "b3", "b4"):
        block = getattr(model, name)
        assert block.conv_branch2a.stride == (2, 2) and block.conv_branch1.stride == (2, 2)
    assert (model.b5.conv_branch2a.dilation, model.b5.conv_branch2b1.dilation) == ((1, 1), (2, 2))
    for name in ("b5_1", "b5_2"):
        block = getattr(model, name)
        assert block.conv_branch2a.dilation == block.conv_branch2b1.dilation == (2, 2)
        assert block.conv_branch2b1.padding == (2, 2)
    for name in ("b6", "b7"):
        assert getattr(model, name).conv_branch2b1.dilation == (4, 4)
        assert getattr(model, name).conv_branch2b1.padding == (4, 4)
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert all(c.bias is None for c in convs)


def test_width_scales_channels_and_keeps_key_names():
    full, small = shapes_of(meta_model("aff")), shapes_of(meta_model("aff", 0.125))
    assert list(full) == list(small)
    assert small["conv1a.weight"] == [8, 3, 3, 3]
    assert small["b7.conv_branch2b2.weight"] == [512, 256, 1, 1]
    assert small["f9.weight"] == [56, 56, 1, 1]          # 8 + 16 + 32 concatenated channels
    assert shapes_of(meta_model("cls", 0.01))["fc8.weight"] == [20, 41, 1, 1]  # round(4096 * .01)
    assert shapes_of(meta_model("boundary", 0.01))["f9.weight"] == [1, 24, 1, 1]  # 3 x max(8, .)
    with pytest.raises(RetabError):
        build_model("seg-that-does-not-exist")


@pytest.fixture(scope="module")
def odd_input():
    torch.manual_seed(0)
    return torch.randn(1, 3, 61, 83)


def test_output_shapes_on_odd_sizes(odd_input):
    torch.manual_seed(1)
    cls = build_model("cls", 0.125).eval()
    feats = cls.feature_dict(odd_input)
    assert {k: tuple(v.shape) for k, v in feats.items()} == {
        "conv4": (1, 64, 8, 11), "conv5": (1, 128, 8, 11), "conv6": (1, 512, 8, 11)}
    assert cls(odd_input).shape == (1, 20)
    assert cls.cam(odd_input).shape == (1, 20, 8, 11)
    assert build_model("aff", 0.125).eval()(odd_input).shape == (1, 56, 8, 11)
    assert build_model("boundary", 0.125).eval()(odd_input).shape == (1, 1, 61, 83)


def test_cam_and_logits_follow_the_spec_formulas(odd_input):
    torch.manual_seed(2)
    cls = build_model("cls", 0.125).eval()
    with torch.no_grad():
        class_maps = F.conv2d(cls.feature_dict(odd_input)["conv6"], cls.fc8.weight)
        torch.testing.assert_close(cls(odd_input), class_maps.mean(dim=(2, 3)))
        assert torch.equal(cls.cam(odd_input), class_maps.clamp(min=0))


def test_boundary_upsampling_keeps_the_corners(odd_input):
    # align_corners=True maps the corner pixels of the 1/8 map onto the input's corners exactly.
    torch.manual_seed(3)
    net = build_model("boundary", 0.125).eval()
    with torch.no_grad():
        low = net.f9(net.f9_input(odd_input))
        high = net(odd_input)
    for y, x in ((0, 0), (-1, 0), (0, -1), (-1, -1)):
        torch.testing.assert_close(high[..., y, x], low[..., y, x])


def test_affinity_features_are_elu_of_f9(odd_input):
    torch.manual_seed(4)
    net = build_model("aff", 0.125).eval()
    with torch.no_grad():
        assert torch.equal(net(odd_input), F.elu(net.f9(net.f9_input(odd_input))))
        assert net.f9_input(odd_input).shape[1] == 56


def randomise_bn_statistics(model):
    """Non-default running statistics, so a load that missed them would show."""
    gen = torch.Generator().manual_seed(5)
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.copy_(torch.randn(module.running_mean.shape, generator=gen) * 0.1)
            module.running_var.copy_(torch.rand(module.running_var.shape, generator=gen) + 0.5)


def test_strict_round_trip_gives_identical_outputs(tmp_path, odd_input):
    torch.manual_seed(6)
    source = build_model("aff", 0.125)
    randomise_bn_statistics(source)
    path = tmp_path / "aff.pth"
    save_checkpoint(path, source)
    assert list(read_torch_file(path)) == list(source.state_dict())  # a plain state dict
    torch.manual_seed(7)
    target = build_model("aff", 0.125)
    report = load_weights(target, path, strict=True)
    assert report.clean and report.loaded == list(source.state_dict())
    with torch.no_grad():
        assert torch.equal(source.eval()(odd_input), target.eval()(odd_input))


def test_checkpoint_without_batch_counters_loads_strictly():
    # Checkpoints of old PyTorch versions have no num_batches_tracked.
    source = build_model("cls", 0.125)
    state = {k: v for k, v in source.state_dict().items() if not k.endswith("num_batches_tracked")}
    report = load_state_dict_checked(build_model("cls", 0.125), state, strict=True)
    assert report.clean


def mismatched_state():
    state = dict(build_model("cls", 0.125).state_dict())
    del state["b3.conv_branch1.weight"]
    state["bogus.weight"] = torch.zeros(3)
    state["b2.conv_branch2a.weight"] = torch.zeros(1, 2, 3, 3)
    return state


def test_strict_load_of_a_mismatched_dict_names_every_bad_key():
    torch.manual_seed(8)
    target = build_model("cls", 0.125)
    before = {k: v.clone() for k, v in target.state_dict().items()}
    with pytest.raises(RetabError) as err:
        load_state_dict_checked(target, mismatched_state(), strict=True, source="ckpt.pth")
    message = str(err.value)
    assert message.startswith("ckpt.pth:") and "\n" not in message
    assert "1 missing (b3.conv_branch1.weight)" in message
    assert "1 unexpected (bogus.weight)" in message
    assert "b2.conv_branch2a.weight: file [1, 2, 3, 3] vs model [16, 8, 3, 3]" in message
    assert all(torch.equal(before[k], v) for k, v in target.state_dict().items())  # nothing loaded


def test_non_strict_load_loads_the_rest_and_logs_the_skipped(caplog):
    state = mismatched_state()
    target = build_model("cls", 0.125)
    with caplog.at_level(logging.INFO, logger="retab"):
        report = load_state_dict_checked(target, state, strict=False, source="ckpt.pth")
    assert report.missing == ["b3.conv_branch1.weight"]
    assert report.unexpected == ["bogus.weight"]
    assert report.mismatched == [("b2.conv_branch2a.weight", (1, 2, 3, 3), (16, 8, 3, 3))]
    loaded = target.state_dict()
    assert set(report.loaded) == set(state) - {"bogus.weight", "b2.conv_branch2a.weight"}
    assert all(torch.equal(loaded[k], state[k]) for k in report.loaded)
    assert "b3.conv_branch1.weight" in caplog.text and "bogus.weight" in caplog.text


def test_load_weights_errors(tmp_path):
    model = build_model("cls", 0.125)
    with pytest.raises(RetabError, match="not found"):
        load_weights(model, tmp_path / "missing.pth")
    (tmp_path / "junk.pth").write_bytes(b"this is not a checkpoint")
    with pytest.raises(RetabError, match="junk.pth"):
        load_weights(model, tmp_path / "junk.pth")


def bn_and_frozen_snapshot(model):
    frozen = {}
    for name, module in model.named_modules():
        if isinstance(module, nn.BatchNorm2d) or name.split(".")[0] in ("conv1a", "b2", "b2_1", "b2_2"):
            for key, value in module.state_dict().items():
                frozen[f"{name}.{key}"] = value.clone()
    return frozen


def test_training_step_changes_only_trainable_parameters():
    torch.manual_seed(9)
    model = build_model("cls", 0.125)
    model.train()
    assert all(not m.training for m in model.modules() if isinstance(m, nn.BatchNorm2d))
    assert all(m.training for m in model.modules() if isinstance(m, nn.Dropout2d))
    frozen_before = bn_and_frozen_snapshot(model)
    trainable_before = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    assert not any(n.split(".")[0] in ("conv1a", "b2", "b2_1", "b2_2") for n in trainable_before)
    assert not any(".bn" in n or n.startswith("bn7") for n in trainable_before)

    optimizer = PolyOptimizer(param_groups(model), lr=0.1, weight_decay=5e-4, max_step=10)
    images = torch.randn(2, 3, 32, 32)
    labels = torch.tensor([[1.0] * 3 + [0.0] * 17, [0.0] * 19 + [1.0]])
    loss = F.multilabel_soft_margin_loss(model(images), labels)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()

    after = model.state_dict()
    assert all(torch.equal(frozen_before[k], after[k]) for k in frozen_before)
    changed = [n for n, p in model.named_parameters() if n in trainable_before
               and not torch.equal(p, trainable_before[n])]
    assert set(changed) == set(trainable_before)


@pytest.mark.parametrize("kind", ["cls", "aff", "boundary"])
def test_batchnorm_is_eval_from_construction_and_after_train(kind):
    model = build_model(kind, 0.125)
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert bns and all(not m.training for m in bns)
    model.train().eval().train()
    assert all(not m.training for m in bns)
    assert all(not p.requires_grad for m in bns for p in m.parameters())


# --- parameter groups and the optimizer ----------------------------------------------------

@pytest.mark.parametrize("kind, heads", [("cls", {"fc8"}), ("aff", {"f8_3", "f8_4", "f8_5", "f9"}),
                                         ("boundary", {"f8_3", "f8_4", "f8_5", "f9"})])
def test_param_groups_of_the_networks(kind, heads):
    model = meta_model(kind, 0.125)
    names = {id(p): n for n, p in model.named_parameters()}
    groups = [[names[id(p)] for p in group] for group in param_groups(model)]
    frozen = ("conv1a", "b2.", "b2_1.", "b2_2.")
    expected_backbone = [n for n in names.values() if ".conv_" in n and not n.startswith(frozen)]
    assert groups[0] == expected_backbone
    assert groups[1] == [] and groups[3] == []
    assert groups[2] == [f"{h}.weight" for h in sorted(heads)]


class TinyNet(nn.Module):
    head_names = ("head",)

    def __init__(self):
        super().__init__()
        self.body = nn.Linear(2, 1)
        self.head = nn.Linear(1, 1)
        self.frozen = nn.Linear(1, 1)
        self.frozen.requires_grad_(False)


def test_param_groups_split_weights_biases_and_heads():
    net = TinyNet()
    assert param_groups(net) == [[net.body.weight], [net.body.bias], [net.head.weight], [net.head.bias]]


def test_poly_learning_rates_and_group_settings():
    net = TinyNet()
    opt = PolyOptimizer(param_groups(net), lr=0.01, weight_decay=5e-4, max_step=10)
    assert [g["weight_decay"] for g in opt.param_groups] == [5e-4, 0, 5e-4, 0]
    base = [0.01, 0.02, 0.1, 0.2]
    for step in range(12):
        opt.step()  # no gradients: only the learning rates move
        effective = min(step, 9)  # past max_step the last rates stay
        factor = (1 - effective / 10) ** 0.9
        assert [g["lr"] for g in opt.param_groups] == pytest.approx([b * factor for b in base], rel=1e-12)
    assert opt.global_step == 12


def test_momentum_quirk_is_the_default():
    net = TinyNet()
    quirky = PolyOptimizer(param_groups(net), lr=0.1, weight_decay=5e-4, max_step=100)
    assert [g["momentum"] for g in quirky.param_groups] == [5e-4] * 4
    real = PolyOptimizer(param_groups(net), lr=0.1, weight_decay=5e-4, max_step=100, momentum=0.9)
    assert [g["momentum"] for g in real.param_groups] == [0.9] * 4


def test_sgd_update_by_hand():
    # w has a constant gradient g; with momentum m and decay d, step 1 moves by lr0*(g + d*w0),
    # step 2 by lr1*(m*buf1 + g + d*w1).
    w = nn.Parameter(torch.tensor([1.0], dtype=torch.float64))
    g, d, m, lr = 3.0, 5e-4, 5e-4, 0.1
    opt = PolyOptimizer([[w], [], [], []], lr=lr, weight_decay=d, max_step=4)
    w0 = 1.0
    buf1 = g + d * w0
    w1 = w0 - lr * buf1
    buf2 = m * buf1 + g + d * w1
    w2 = w1 - lr * (1 - 1 / 4) ** 0.9 * buf2
    for expected in (w1, w2):
        w.grad = torch.tensor([g], dtype=torch.float64)
        opt.step()
        assert w.item() == pytest.approx(expected, rel=1e-12)


def test_optimizer_state_round_trip(tmp_path):
    torch.manual_seed(10)
    nets = [TinyNet(), TinyNet()]
    nets[1].load_state_dict(nets[0].state_dict())
    x = torch.randn(4, 2)

    def train_step(net, opt):
        opt.zero_grad()
        net.head(net.body(x)).square().mean().backward()
        opt.step()

    first = PolyOptimizer(param_groups(nets[0]), lr=0.1, weight_decay=5e-4, max_step=20, momentum=0.9)
    for _ in range(3):
        train_step(nets[0], first)
    save_checkpoint(tmp_path / "resume.pth", nets[0], first, epoch=3)
    saved = read_torch_file(tmp_path / "resume.pth")
    assert saved["epoch"] == 3

    second = PolyOptimizer(param_groups(nets[1]), lr=0.5, weight_decay=1e-3, max_step=7)
    load_weights(nets[1], tmp_path / "resume.pth", strict=True)
    second.load_state_dict(saved["optimizer"])
    assert second.global_step == 3 and second.max_step == 20
    assert second.initial_lrs == first.initial_lrs
    assert second.param_groups[0]["lr"] == first.param_groups[0]["lr"]
    assert second.param_groups[0]["momentum"] == 0.9
    train_step(nets[0], first)
    train_step(nets[1], second)
    for a, b in zip(nets[0].parameters(), nets[1].parameters()):
        assert torch.equal(a, b)
    assert math.isclose(second.param_groups[2]["lr"], 1.0 * (1 - 3 / 20) ** 0.9)


# --- training from scratch (not in the paper; the CPU demo) -----------------------------------

def test_train_from_scratch_trains_every_layer_and_batchnorm():
    torch.manual_seed(11)
    model = build_model("cls", 0.125)
    fc8_before = model.fc8.weight.detach().clone()
    model.train_from_scratch()
    assert torch.equal(model.fc8.weight, fc8_before)  # the head keeps its own initialisation
    # He-normal: std of a backbone conv = sqrt(2 / fan_in)
    w = model.b4_1.conv_branch2a.weight
    assert w.std().item() == pytest.approx(math.sqrt(2 / (w.shape[1] * 9)), rel=0.1)
    # every residual branch ends in zeros: each block starts as its shortcut
    assert not model.b4_1.conv_branch2b1.weight.any() and not model.b7.conv_branch2b2.weight.any()
    assert model.b7.conv_branch2b1.weight.any()
    x = torch.randn(1, model.b4_1.bn_branch2a.num_features, 5, 5)
    model.eval()
    assert torch.equal(model.b4_1(x), x)
    assert all(m.p == 0 for m in model.modules() if isinstance(m, nn.Dropout2d))
    assert all(p.requires_grad for p in model.parameters())
    model.eval().train()
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert all(m.training for m in bns)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    opt = make_optimizer("adamw", param_groups(model), lr=1e-3, weight_decay=1e-4, max_step=5)
    loss = F.multilabel_soft_margin_loss(model(torch.randn(2, 3, 32, 32)), torch.ones(2, 20))
    loss.backward()
    opt.step()
    after = model.state_dict()
    assert not torch.equal(before["conv1a.weight"], after["conv1a.weight"])
    assert not torch.equal(before["b2.bn_branch2a.running_mean"], after["b2.bn_branch2a.running_mean"])
    assert not torch.equal(before["bn7.weight"], after["bn7.weight"])
    model.eval()
    assert not any(m.training for m in bns)


def test_poly_adamw_same_schedule_equal_group_lrs_and_resume():
    net = TinyNet()
    opt = make_optimizer("adamw", param_groups(net), lr=0.01, weight_decay=1e-4, max_step=10)
    assert isinstance(opt, PolyAdamW)
    assert [g["weight_decay"] for g in opt.param_groups] == [1e-4, 0, 1e-4, 0]
    for step in range(3):
        opt.step()
        assert [g["lr"] for g in opt.param_groups] == pytest.approx([0.01 * (1 - step / 10) ** 0.9] * 4)
    other = make_optimizer("adamw", param_groups(TinyNet()), lr=0.5, weight_decay=0.0, max_step=99)
    other.load_state_dict(opt.state_dict())
    assert (other.global_step, other.max_step, other.initial_lrs) == (3, 10, [0.01] * 4)
    with pytest.raises(ValueError, match="momentum"):
        make_optimizer("adamw", param_groups(net), lr=0.01, weight_decay=0.0, max_step=2, momentum=0.9)
    with pytest.raises(ValueError, match="unknown optimizer"):
        make_optimizer("adam", param_groups(net), lr=0.01, weight_decay=0.0, max_step=2)


def test_every_training_stage_takes_the_optimizer_flag():
    import argparse

    from retab.optim import PolyAdamW
    from retab.stages import train_aff, train_affmixed_boundary, train_boundary, train_cls, train_seg
    from retab.engines.stage_support import make_train_config, make_train_optimizer

    for stage in (train_cls, train_aff, train_boundary, train_affmixed_boundary, train_seg):
        flag = next(a for a in stage.build_parser()._actions if "--optimizer" in a.option_strings)
        assert flag.default == "sgd" and set(flag.choices) == {"sgd", "adamw"}  # published default
    args = train_boundary.build_parser().parse_args(["--optimizer", "adamw", "--lr", "0.002"])
    cfg = make_train_config(args)
    opt = make_train_optimizer(args, TinyNet(), n_samples=16, cfg=cfg)
    assert isinstance(opt, PolyAdamW) and opt.max_step == (16 // args.batch_size) * args.max_epoches
    bad = argparse.Namespace(**{**vars(args), "momentum": 0.9})
    with pytest.raises(RetabError, match="--momentum applies to --optimizer sgd only"):
        make_train_optimizer(bad, TinyNet(), n_samples=16, cfg=cfg)
