#!/usr/bin/env python
"""Write the small `.params` fixtures of tests/test_mxnet_params.py with a real MXNet, and beside
each one a `.npz` of the arrays it must read back as.

Needs MXNet 1.x, kept out of the project's own environment:
    python3 -m venv .mxvenv && .mxvenv/bin/pip install 'numpy<1.24' mxnet==1.9.1
    .mxvenv/bin/python tools/make_mxnet_fixtures.py [OUT_DIR]   (default tests/fixtures/mxnet)

Files:
- dtypes.params     V2 records of every type flag (float32/64/16, uint8, int32, int8, int64)
- backbone.params   ResNet-38-style names with `arg:` / `aux:` prefixes, tiny shapes
- unnamed.params    a list saved without names
- npshape.params    V3 records (NumPy-shape mode): a 0-d scalar, a zero-size and a 2-D array
- sparse.params     a CSR array (non-dense storage: the reader must refuse it; no .npz)
"""
import sys
from pathlib import Path

import mxnet as mx
import numpy as np

rng = np.random.default_rng(20220101)


def dtype_arrays():
    return {
        "arg:f32": rng.standard_normal((2, 3)).astype(np.float32),
        "arg:f64": rng.standard_normal((3,)).astype(np.float64),
        "arg:f16": rng.standard_normal((2, 2)).astype(np.float16),
        "aux:u8": rng.integers(0, 256, (4,)).astype(np.uint8),
        "aux:i32": rng.integers(-2**31, 2**31 - 1, (2, 1, 2)).astype(np.int32),
        "aux:i8": rng.integers(-128, 128, (5,)).astype(np.int8),
        "aux:i64": np.array([-2**62, 7, 2**40 + 3], np.int64),
    }


def backbone_arrays():
    shapes = {
        "arg:conv1a_weight": (4, 3, 3, 3),
        "arg:res2a_branch1_weight": (8, 4, 1, 1),
        "arg:bn2a_branch2a_gamma": (4,),
        "arg:bn2a_branch2a_beta": (4,),
        "aux:bn2a_branch2a_moving_mean": (4,),
        "aux:bn2a_branch2a_moving_var": (4,),
        "arg:res4b3_branch2a_weight": (2, 2, 3, 3),
        "arg:bn5a_branch2b1_gamma": (3,),
        "arg:res6a_branch2b2_weight": (5, 2, 1, 1),
        "arg:bn7_gamma": (6,),
        "aux:bn7_moving_var": (6,),
        "arg:linear1000_weight": (3, 6),
        "arg:linear1000_bias": (3,),
    }
    return {name: rng.standard_normal(shape).astype(np.float32) for name, shape in shapes.items()}


def save(out_dir: Path, stem: str, arrays: dict, named: bool = True, np_shape: bool = False):
    nd = mx.np if np_shape else mx.nd
    values = [nd.array(a, dtype=a.dtype) for a in arrays.values()]
    target = str(out_dir / f"{stem}.params")
    if np_shape:
        mx.npx.save(target, dict(zip(arrays, values)))
    elif named:
        mx.nd.save(target, dict(zip(arrays, values)))
    else:
        mx.nd.save(target, values)
    keys = list(arrays) if named else [str(i) for i in range(len(arrays))]
    np.savez(out_dir / f"{stem}.npz", **dict(zip(keys, arrays.values())))


def main():
    out_dir = Path(sys.argv[1] if len(sys.argv) > 1 else "tests/fixtures/mxnet")
    out_dir.mkdir(parents=True, exist_ok=True)
    save(out_dir, "dtypes", dtype_arrays())
    save(out_dir, "backbone", backbone_arrays())
    save(out_dir, "unnamed", {"a": np.arange(6, dtype=np.float32).reshape(2, 3),
                              "b": np.array([1, -1], np.int32)}, named=False)
    mx.npx.set_np()
    save(out_dir, "npshape", {"arg:scalar": np.array(2.5, np.float32),
                              "arg:empty": np.zeros((0, 3), np.float32),
                              "arg:matrix": rng.standard_normal((2, 2)).astype(np.float64)},
         np_shape=True)
    mx.npx.reset_np()
    dense = np.array([[0, 1.5, 0], [2, 0, 0]], np.float32)
    mx.nd.save(str(out_dir / "sparse.params"), {"arg:csr": mx.nd.array(dense).tostype("csr")})
    for path in sorted(out_dir.iterdir()):
        print(f"{path}  {path.stat().st_size} bytes")


if __name__ == "__main__":
    main()
