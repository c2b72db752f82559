# Shared by the three drivers (psa/run_psa.sh, RETAB/run_retab.sh, seg/run_seg.sh); sourced, not run.
# The sourcing driver sets DRIVER (its name in messages) and runs from its own folder.

# The settings every driver takes (documented in each driver's header).
PYTHON=${PYTHON:-python3}
DEVICE=${DEVICE:-auto}
WIDTH=${WIDTH:-1.0}
SEED=${SEED:-0}
FOLD=${FOLD:-0}
BACKBONE=${BACKBONE:-resnet38}

say() { echo "$DRIVER: $*"; }

die() {
    echo "$DRIVER: error: $*" >&2
    exit 2
}

case $BACKBONE in
resnet38) ;;
# its package ships its ImageNet weights: every network starts from them unless WEIGHTS names a file
efficientnet_lite0) [ -n "${WEIGHTS+set}" ] || WEIGHTS= ;;
*) die "BACKBONE must be resnet38 or efficientnet_lite0, got '$BACKBONE'" ;;
esac

# Settings are checked here and at the top of each driver, before its first step: a bad one
# found by a later step would cost every step before it.

# need_int NAME MIN: the setting NAME must be an integer >= MIN
need_int() {
    eval "value=\${$1}"
    case $value in
    "" | *[!0-9]*) die "$1 must be an integer >= $2, got '$value'" ;;
    esac
    [ "$value" -ge "$2" ] || die "$1 must be an integer >= $2, got '$value'"
}

# need_number NAME CONDITION WHAT: the setting NAME must be a number v for which the awk CONDITION
# holds (e.g. 'v > 0'); WHAT says so in the message. Several numbers separated by spaces are
# each checked (CAM_SCALES, RESIZE_LONG).
need_number() {
    eval "value=\${$1}"
    [ -n "$value" ] || die "$1 must be $3, got ''"
    for v in $value; do
        awk -v v="$v" "BEGIN { exit !(v ~ /^([0-9]+\.?[0-9]*|\.[0-9]+)([eE][-+]?[0-9]+)?\$/ && ($2)) }" \
            || die "$1 must be $3, got '$value'"
    done
}

# need_choice NAME CHOICE...: the setting NAME must be one of the CHOICEs
need_choice() {
    name=$1
    eval "value=\${$1}"
    shift
    for choice in "$@"; do
        [ "$value" != "$choice" ] || return 0
    done
    die "$name must be one of $*, got '$value'"
}

# need_range NAME: the setting NAME must be two integers LO HI with 0 < LO <= HI (RESIZE_LONG)
need_range() {
    eval "value=\${$1}"
    awk -v s="$value" 'BEGIN { n = split(s, a, " "); exit !(n == 2 && a[1] ~ /^[0-9]+$/ && a[2] ~ /^[0-9]+$/ \
        && a[1] + 0 > 0 && a[1] + 0 <= a[2] + 0) }' || die "$1 must be two integers LO HI with 0 < LO <= HI, got '$value'"
}

# make_out_dir DIR: create the output root, or stop when it cannot be created or written
make_out_dir() {
    mkdir -p "$1" 2>/dev/null || die "OUT=$1 cannot be created (is a part of it a file, or read-only?)"
    [ -w "$1" ] || die "OUT=$1 is not writable"
}

case $FOLD in
0 | 1 | 2 | 3) ;;
*) die "FOLD must be 0, 1, 2 or 3 (the PASCAL-5i fold), got '$FOLD'" ;;
esac
need_number WIDTH 'v > 0' "a positive number"
need_int SEED 0
case $DEVICE in
auto | cpu | cuda | cuda:[0-9] | cuda:[0-9][0-9]) ;;
*) die "DEVICE must be auto, cpu, cuda or cuda:N, got '$DEVICE'" ;;
esac
[ -z "${NUM_WORKERS:-}" ] || need_int NUM_WORKERS 0
command -v "$PYTHON" >/dev/null 2>&1 || die "PYTHON=$PYTHON is not an interpreter that can be run"
# settings of several drivers, checked when given (each driver's defaults are valid)
for setting in ALPHA BETA; do
    eval "[ -z \"\${$setting:-}\" ]" || need_number "$setting" 'v > 0' "a positive number"
done
[ -z "${LOGT:-}" ] || need_int LOGT 0
[ -z "${MOMENTUM:-}" ] || need_number MOMENTUM 'v + 0 < 1' "a number in [0, 1)"
[ -z "${OPTIMIZER:-}" ] || need_choice OPTIMIZER sgd adamw
[ -z "${CROP_SIZE:-}" ] || need_int CROP_SIZE 1
[ -z "${BATCH_SIZE:-}" ] || need_int BATCH_SIZE 1

# AMP (unset: full precision) is passed as --amp to every stage that runs a network
case ${AMP:-none} in
none | bf16 | fp16) ;;
*) die "AMP must be none, bf16 or fp16, got '$AMP'" ;;
esac
[ "${AMP:-}" != none ] || AMP=

# The CRF labels (SPEC 3): la / ha with background (1 - max CAM) ** LA_ALPHA [4] and ** HA_ALPHA [32],
# in folders named as the published ones (psa_trainaug_crf_4.0): run_psa.sh writes them,
# run_retab.sh reads them.
LA_ALPHA=${LA_ALPHA:-4}
HA_ALPHA=${HA_ALPHA:-32}
for alpha in "$LA_ALPHA" "$HA_ALPHA"; do
    awk -v v="$alpha" 'BEGIN { exit !(v ~ /^([0-9]+\.?[0-9]*|\.[0-9]+)$/ && v + 0 > 0) }' \
        || die "LA_ALPHA and HA_ALPHA must be positive numbers, got '$alpha'"
done
# crf_dir_name ALPHA: the folder of one CRF label set, named as Python prints the float (4 -> 4.0)
crf_dir_name() {
    case $1 in
    *.*) echo "psa_trainaug_crf_$1" ;;
    *) echo "psa_trainaug_crf_$1.0" ;;
    esac
}

# The package: installed in $PYTHON's environment, or else the source tree beside the driver.
PYTHONPATH="$(cd .. && pwd)/src${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONPATH

# Each step is one stage command with RETAB_STEP=NAME: the stage logs its command line and records
# `NAME<TAB>seconds` in $RETAB_TIMINGS when it did work (retab.misc.steps).

# link NAME TARGET: ./NAME -> TARGET, replacing an old link but never a real folder
link() {
    if [ "$(cd "$1" 2>/dev/null && pwd -P)" != "$(cd "$2" && pwd -P)" ]; then
        if [ -e "$1" ] && [ ! -L "$1" ]; then
            die "./$1 exists and is not a link to $2"
        fi
        rm -f "$1"
        ln -s "$2" "$1"
        say "linked ./$1 -> $2"
    fi
}

# use_dataset CANDIDATE...: VOC12HOME (from the environment, else the first candidate folder that
# exists, else the mini-VOC ../data/mini_voc/VOC2012, generated when absent with SYNTH_SCALE as
# its --scale), linked as ./VOC2012; then the lists under ./voc12, made by `retab make_splits`
# unless they are complete and were made from this same dataset.
use_dataset() {
    if [ -z "${VOC12HOME:-}" ]; then
        for candidate in "$@"; do
            if [ -d "$candidate" ]; then
                VOC12HOME=$candidate
                break
            fi
        done
    fi
    if [ -z "${VOC12HOME:-}" ]; then
        VOC12HOME=../data/mini_voc/VOC2012
        RETAB_STEP=synth_voc "$PYTHON" -m retab synth_voc --out "$VOC12HOME" ${SYNTH_SCALE:+--scale "$SYNTH_SCALE"}
    fi
    [ -d "$VOC12HOME" ] || die "VOC12HOME=$VOC12HOME is not a folder"
    VOC12HOME=$(cd "$VOC12HOME" && pwd -P)
    link VOC2012 "$VOC12HOME"
    if ! "$PYTHON" -c 'import sys; from retab.stages.make_splits import splits_complete; sys.exit(0 if splits_complete("voc12") else 1)' \
        || [ "$(cat voc12/.voc12home 2>/dev/null)" != "$VOC12HOME" ]; then
        RETAB_STEP=make_splits "$PYTHON" -m retab make_splits --voc12_root VOC2012 --out_dir voc12
        printf '%s\n' "$VOC12HOME" >voc12/.voc12home
    fi
}
