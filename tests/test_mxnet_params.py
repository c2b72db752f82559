"""The MXNet `.params` reader (SPEC 2) against files written by a real MXNet 1.9.1
(tests/fixtures/mxnet, made by tests/fixtures/make_mxnet_fixtures.py), hand-built V1 and legacy records,
broken files, and the mapping of the ImageNet backbone names onto the ResNet-38 keys."""
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from retab.misc.errors import RetabError
from retab.models import build_model
from retab.models.mxnet_params import load_mxnet_params, mxnet_name_to_key, mxnet_to_state_dict
from retab.models.weights import load_weights
from test_models import BASIC_BLOCKS, BOTTLENECK_BLOCKS, STRIDED, meta_model

FIXTURES = Path(__file__).parent / "fixtures" / "mxnet"

# Written out from the format description, independently of the reader.
FLAG_OF = {np.dtype(np.float32): 0, np.dtype(np.float64): 1, np.dtype(np.float16): 2,
           np.dtype(np.uint8): 3, np.dtype(np.int32): 4, np.dtype(np.int8): 5, np.dtype(np.int64): 6}
CPU_CONTEXT = struct.pack("<ii", 1, 0)


def shape_bytes(shape):
    return struct.pack("<i", len(shape)) + struct.pack(f"<{len(shape)}q", *shape)


def record(array, version="v2", flag=None):
    array = np.asarray(array)
    flag = FLAG_OF[array.dtype] if flag is None else flag
    body = CPU_CONTEXT + struct.pack("<i", flag) + array.astype(array.dtype.newbyteorder("<")).tobytes()
    if version == "v2":
        return struct.pack("<Ii", 0xF993FAC9, 0) + shape_bytes(array.shape) + body
    if version == "v1":
        return struct.pack("<I", 0xF993FAC8) + shape_bytes(array.shape) + body
    assert version == "legacy"
    return struct.pack(f"<I{array.ndim}I", array.ndim, *array.shape) + body


def ndarray_list(records, names):
    out = struct.pack("<QQQ", 0x112, 0, len(records)) + b"".join(records)
    out += struct.pack("<Q", len(names))
    return out + b"".join(struct.pack("<Q", len(n.encode())) + n.encode() for n in names)


def assert_same_arrays(read, expected):
    assert list(read) == list(expected)
    for name, array in expected.items():
        assert read[name].dtype == array.dtype and read[name].shape == array.shape, name
        assert np.array_equal(read[name], array), name


@pytest.mark.parametrize("stem", ["dtypes", "backbone", "unnamed", "npshape"])
def test_files_written_by_mxnet(stem):
    with np.load(FIXTURES / f"{stem}.npz") as npz:
        expected = {k: npz[k] for k in npz.files}
    assert_same_arrays(load_mxnet_params(FIXTURES / f"{stem}.params"), expected)


def test_every_type_flag_is_covered_by_the_fixture():
    dtypes = {a.dtype for a in load_mxnet_params(FIXTURES / "dtypes.params").values()}
    assert dtypes == set(FLAG_OF)


def test_hand_built_v2_records_equal_mxnet_bytes():
    # Checks this file's writer (used below for V1 / legacy records) against MXNet itself.
    with np.load(FIXTURES / "dtypes.npz") as npz:
        built = ndarray_list([record(npz[k]) for k in npz.files], list(npz.files))
    assert built == (FIXTURES / "dtypes.params").read_bytes()


def test_v1_and_legacy_records(tmp_path):
    arrays = {"arg:a": np.arange(6, dtype=np.float32).reshape(2, 3),
              "aux:b": np.array([[-3], [4]], np.int64),
              "arg:c": np.array([0.5, -2.25], np.float16),
              "arg:d": np.arange(24, dtype=np.uint8).reshape(2, 3, 4)}
    versions = ["v1", "legacy", "legacy", "v2"]
    path = tmp_path / "mixed.params"
    path.write_bytes(ndarray_list([record(a, v) for a, v in zip(arrays.values(), versions)], list(arrays)))
    assert_same_arrays(load_mxnet_params(path), arrays)


def test_empty_records_have_no_payload(tmp_path):
    # MXNet writes an array of unknown shape as the shape alone (ndim 0, or a zero dim for V1/legacy).
    empty_legacy = struct.pack("<I", 0)
    empty_v1 = struct.pack("<I", 0xF993FAC8) + shape_bytes(())
    empty_v2 = struct.pack("<Ii", 0xF993FAC9, 0) + shape_bytes(())
    zero_dim_legacy = struct.pack("<III", 2, 0, 3)
    last = np.array([7, 8], np.int32)
    path = tmp_path / "empty.params"
    path.write_bytes(ndarray_list([empty_legacy, empty_v1, empty_v2, zero_dim_legacy, record(last)],
                                  ["e1", "e2", "e3", "e4", "last"]))
    read = load_mxnet_params(path)
    assert [read[k].size for k in ("e1", "e2", "e3", "e4")] == [0, 0, 0, 0]
    assert np.array_equal(read["last"], last)


def test_truncated_files_are_errors(tmp_path):
    data = (FIXTURES / "dtypes.params").read_bytes()
    path = tmp_path / "cut.params"
    for length in range(len(data)):
        path.write_bytes(data[:length])
        with pytest.raises(RetabError, match=r"cut\.params: (truncated|not an MXNet)"):
            load_mxnet_params(path)


def test_foreign_and_broken_files_are_errors(tmp_path):
    foreign = tmp_path / "foreign.params"
    foreign.write_bytes((FIXTURES / "dtypes.npz").read_bytes())
    with pytest.raises(RetabError, match="foreign.params: not an MXNet params file"):
        load_mxnet_params(foreign)
    with pytest.raises(RetabError, match="not found"):
        load_mxnet_params(tmp_path / "absent.params")

    broken = tmp_path / "broken.params"
    broken.write_bytes(ndarray_list([record(np.zeros(2, np.float32), flag=9)], ["x"]))
    with pytest.raises(RetabError, match="broken.params: array 0 has unknown type flag 9"):
        load_mxnet_params(broken)
    broken.write_bytes(ndarray_list([struct.pack("<I", 0xDEADBEEF)], ["x"]))
    with pytest.raises(RetabError, match="broken.params: array 0 starts with unknown magic 0xdeadbeef"):
        load_mxnet_params(broken)
    broken.write_bytes(ndarray_list([record(np.zeros(2, np.float32))], ["x", "y"]))
    with pytest.raises(RetabError, match="2 names for 1 arrays"):
        load_mxnet_params(broken)
    with pytest.raises(RetabError, match="sparse.params: array 0 has non-dense storage type"):
        load_mxnet_params(FIXTURES / "sparse.params")


def test_mapping_of_the_backbone_fixture():
    params = load_mxnet_params(FIXTURES / "backbone.params")
    mapped = mxnet_to_state_dict(params)
    expected_names = {
        "arg:conv1a_weight": "conv1a.weight",
        "arg:res2a_branch1_weight": "b2.conv_branch1.weight",
        "arg:bn2a_branch2a_gamma": "b2.bn_branch2a.weight",
        "arg:bn2a_branch2a_beta": "b2.bn_branch2a.bias",
        "aux:bn2a_branch2a_moving_mean": "b2.bn_branch2a.running_mean",
        "aux:bn2a_branch2a_moving_var": "b2.bn_branch2a.running_var",
        "arg:res4b3_branch2a_weight": "b4_3.conv_branch2a.weight",
        "arg:bn5a_branch2b1_gamma": "b5.bn_branch2b1.weight",
        "arg:res6a_branch2b2_weight": "b6.conv_branch2b2.weight",
        "arg:bn7_gamma": "bn7.weight",
        "aux:bn7_moving_var": "bn7.running_var",
    }
    assert list(mapped) == list(expected_names.values())  # linear1000_* dropped
    for name, key in expected_names.items():
        assert mapped[key] is params[name]


def mxnet_backbone_names():
    """{MXNet name: key} for the whole backbone, from the SPEC table and the naming rule."""
    pairs = {"arg:conv1a_weight": "conv1a.weight"}

    def add_bn(mx_prefix, key_prefix):
        for mx_suffix, key_suffix in (("gamma", "weight"), ("beta", "bias")):
            pairs[f"arg:{mx_prefix}_{mx_suffix}"] = f"{key_prefix}.{key_suffix}"
        for mx_suffix, key_suffix in (("moving_mean", "running_mean"), ("moving_var", "running_var")):
            pairs[f"aux:{mx_prefix}_{mx_suffix}"] = f"{key_prefix}.{key_suffix}"

    def unit_of(block):  # b4 -> (4, 'a'), b4_3 -> (4, 'b3')
        stage, _, n = block[1:].partition("_")
        return stage, f"b{n}" if n else "a"

    blocks = [(name, c_in != out or name in STRIDED, ("2a", "2b1")) for name, c_in, _, out in BASIC_BLOCKS]
    blocks += [(name, True, ("2a", "2b1", "2b2")) for name, _, _ in BOTTLENECK_BLOCKS]
    for block, has_projection, branches in blocks:
        stage, unit = unit_of(block)
        for branch in branches:
            add_bn(f"bn{stage}{unit}_branch{branch}", f"{block}.bn_branch{branch}")
            pairs[f"arg:res{stage}{unit}_branch{branch}_weight"] = f"{block}.conv_branch{branch}.weight"
        if has_projection:
            pairs[f"arg:res{stage}{unit}_branch1_weight"] = f"{block}.conv_branch1.weight"
    add_bn("bn7", "bn7")
    return pairs


def test_full_backbone_names_cover_exactly_the_backbone_keys():
    pairs = mxnet_backbone_names()
    names = list(pairs) + ["arg:linear1000_weight", "arg:linear1000_bias"]
    mapped = mxnet_to_state_dict({name: np.zeros(1) for name in names})
    assert list(mapped) == list(pairs.values())
    backbone_keys = {k for k in meta_model("cls").state_dict()
                     if not k.endswith("num_batches_tracked") and not k.startswith("fc8")}
    assert set(mapped) == backbone_keys


def test_unknown_names_pass_through_to_be_reported():
    assert mxnet_name_to_key("arg:fc9_weight") == "fc9_weight"
    assert mxnet_name_to_key("arg:res4b3_branch2a_gamma") == "res4b3_branch2a_gamma"  # a conv has no gamma
    assert mxnet_name_to_key("aux:linear1000_bias") is None


def test_load_weights_from_params_initialises_the_backbone_only(tmp_path):
    torch.manual_seed(0)
    source = build_model("cls", 0.125)
    state = source.state_dict()
    pairs = mxnet_backbone_names()
    path = tmp_path / "ilsvrc-tiny.params"
    records = [record(state[key].numpy()) for key in pairs.values()]
    extra = np.ones((3, 4), np.float32)  # the ImageNet classifier: dropped, not reported
    path.write_bytes(ndarray_list(records + [record(extra)], list(pairs) + ["arg:linear1000_weight"]))

    torch.manual_seed(1)
    target = build_model("cls", 0.125)
    fc8_before = target.fc8.weight.detach().clone()
    report = load_weights(target, path, strict=True)  # .params is always non-strict
    assert report.missing == ["fc8.weight"] and not report.unexpected and not report.mismatched
    loaded = target.state_dict()
    assert all(torch.equal(loaded[k], state[k]) for k in pairs.values())
    assert torch.equal(target.fc8.weight, fc8_before)


def hostile_record(shape, flag: int = 0) -> bytes:
    """A V2 array header declaring `shape` with no data behind it."""
    return struct.pack("<Ii", 0xF993FAC9, 0) + shape_bytes(shape) + CPU_CONTEXT + struct.pack("<i", flag)


@pytest.mark.parametrize("content, message", [
    # a 2^48-element float32 array declared in a file of about 100 bytes
    (ndarray_list([hostile_record((2**24, 2**24))], ["x"]),
     r"array 0 data \(shape \[16777216, 16777216\]\) needs 1125899906842624 bytes, the file has \d+ left"),
    # dimensions whose product wraps around in int64 (np.prod would make it 0)
    (ndarray_list([hostile_record((2**62, 4))], ["x"]), r"needs 73786976294838206464 bytes"),
    (ndarray_list([hostile_record((2**31 - 1,) * 3)], ["x"]), r"array 0 data .* needs"),
    # 2^60 arrays, a 2^40-dimensional shape, a 2^50-byte name
    (struct.pack("<QQQ", 0x112, 0, 2**60) + b"\0" * 76, r"its header claims 1152921504606846976 arrays"),
    (struct.pack("<QQQ", 0x112, 0, 1) + struct.pack("<Iii", 0xF993FAC9, 0, 2**30) + b"\0" * 64, r"array 0 needs 8589934592"),
    (ndarray_list([record(np.zeros(2, np.float32))], []) [:-8] + struct.pack("<QQ", 1, 2**50) + b"ab",
     r"name 0 needs 1125899906842624 bytes"),
])
def test_header_sizes_are_checked_against_the_file_before_reading(tmp_path, content, message):
    path = tmp_path / "hostile.params"
    path.write_bytes(content)
    assert path.stat().st_size < 200
    with pytest.raises(RetabError, match=r"hostile\.params: truncated or corrupt MXNet params file: .*" + message):
        load_mxnet_params(path)
