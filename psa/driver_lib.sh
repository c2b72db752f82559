# Shared by the three drivers (psa/run_psa.sh, RETAB/run_retab.sh, seg/run_seg.sh); sourced, not run.
# The sourcing driver sets DRIVER (its name in messages) and runs from its own folder.

# The settings every driver takes (documented in each driver's header).
PYTHON=${PYTHON:-python3}
DEVICE=${DEVICE:-auto}
WIDTH=${WIDTH:-1.0}
SEED=${SEED:-0}
FOLD=${FOLD:-0}
BACKBONE=${BACKBONE:-resnet38}

# each step names itself (RETAB_STEP=NAME before its command): none is taken from the caller
unset RETAB_STEP

say() { echo "$DRIVER: $*"; }

die() {
    echo "$DRIVER: error: $*" >&2
    exit 2
}

# The package: installed in $PYTHON's environment, or else the source tree beside the driver.
PYTHONPATH="$(cd .. && pwd)/src${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONPATH

# Every setting the driver reads is checked before its first step (retab.engines.driver_settings):
# a bad one found by a later step would cost every step before it.
command -v "$PYTHON" >/dev/null 2>&1 || die "PYTHON=$PYTHON is not an interpreter that can be run"
"$PYTHON" -m retab check_settings "$DRIVER" || exit 2

# AMP=none: full precision, no --amp
[ "${AMP:-}" != none ] || AMP=

# make_out_dir DIR: create the output root, or stop when it cannot be created or written
make_out_dir() {
    mkdir -p "$1" 2>/dev/null || die "OUT=$1 cannot be created (is a part of it a file, or read-only?)"
    [ -w "$1" ] || die "OUT=$1 is not writable"
}

# Initial weights: every training step passes --weights "${WEIGHTS-auto}": WEIGHTS when set (empty:
# none), else the stage's `auto` rule (ImageNet weights as published, else --fallback_weights, else none).

# crf_dir_name ALPHA: the folder of one CRF label set (SPEC 3), named as the published ones and as
# Python prints the float (4 -> psa_trainaug_crf_4.0): run_psa.sh writes them, run_retab.sh reads them
crf_dir_name() {
    case $1 in
    *.*) echo "psa_trainaug_crf_$1" ;;
    *) echo "psa_trainaug_crf_$1.0" ;;
    esac
}

# Each step is one stage command with RETAB_STEP=NAME: the stage logs its command line and records
# `NAME<TAB>seconds` in $RETAB_TIMINGS when it did work (retab.misc.steps).

# The dataset: `retab use_dataset` (VOC12HOME, else the first of the driver's candidate folders that
# exists, else the mini-VOC ../data/mini_voc/VOC2012, generated when absent with SYNTH_SCALE as its
# --scale), linked as ./VOC2012 and listed under ./voc12.
MINI_VOC=../data/mini_voc/VOC2012
