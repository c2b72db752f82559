#!/bin/sh
# The RETAB stage of one fold end to end (SPEC 4): boundary net on the fold's base samples,
# boundary target maps, mixed affinity net, the two-stage boundary-aware random walk on
# train_aug, and the evaluations on train (initial CAMs, stage 2's labels, stage 2's dicts with
# the background-threshold scan).
#
#   cd psa && sh run_psa.sh          # first: the PSA outputs this stage starts from
#   cd RETAB && FOLD=1 sh run_retab.sh
#
# Environment (defaults in brackets; a relative path is relative to RETAB/, where every step runs):
#   FOLD [0]     PASCAL-5i fold 0..3 (novel labels 5F+1 .. 5F+5)
#   VOC12HOME    dataset root [./VOC2012 if it exists, else the one psa/ uses (../psa/VOC2012),
#                else ../data/mini_voc/VOC2012]
#   PSA_OUT      outputs of psa/run_psa.sh [../psa/out]: psa_trainaug_cam/, psa_trainaug_crf_4.0/,
#                psa_trainaug_crf_32.0/; linked as ./psa_initcam and ./psa_afflabel (published layout)
#   LA_ALPHA [4]  HA_ALPHA [32]  which CRF label folders of PSA_OUT to read (as run_psa.sh wrote them)
#   PYTHON [python3]  DEVICE [auto]  WIDTH [1.0]  SEED [0]  CROP_SIZE [448]  BATCH_SIZE [8]
#   AMP [none]   bf16 or fp16: every network runs under autocast (--amp; bf16 also speeds up CPUs)
#   BOUNDARY_EPOCHS [8]  AFF_EPOCHS [8]  BOUNDARY_LR [0.001]  AFF_LR [0.01]  KERNEL [0]  THRESHOLD [0.5]
#   ALPHA [16]   background exponent of the random walk's CAM input, bg = (1 - max CAM) ** ALPHA
#                (published 16; CAMs of other methods or networks may want another: it sets where
#                the walk starts to call a pixel background)
#   LOGT [8]     the walk runs 2 ** LOGT steps (published 8, for VOC's ~63 x 47 feature grids; how far
#                scores spread grows with the steps, so smaller grids may want fewer)
#   BETA [8]     exponent of the affinities in the walk's transition matrix, T = A ** BETA / column sums
#                (published 8; a larger one lets less through a weak affinity at each step)
#   GRID_SAMPLING [nearest]  how GT masks and boundary target maps are sampled onto the 1/8 grid
#                (mixed affinity training and both walks): nearest = each cell's top-left pixel
#                (published), nearest-exact = its centre, where the CAMs are averaged (docs/measurements.md)
#   MOMENTUM     real SGD momentum of both trainings (e.g. 0.9) [unset: the published quirk, see retab.optim];
#                refused with OPTIMIZER=adamw
#   OPTIMIZER    sgd (published) or adamw, both trainings [sgd]
#   NUM_WORKERS [stage defaults]  INFER_LIST [voc12/train_aug.txt] (images of both random-walk stages)
#   BACKBONE [resnet38]  or efficientnet_lite0 (as in psa/run_psa.sh; PSA's nets must match it)
#   WEIGHTS      initial weights of both trainings [auto: for ResNet-38 at WIDTH 1.0
#                pretrained_model/ilsvrc-cls_rna-a1_cls1000_ep-0001.params when present (published); else
#                the PSA classifier $PSA_CLS, with a warning; else a random initialisation, with a
#                warning]; WEIGHTS= (set, empty): a random initialisation
#   PSA_CLS      the PSA classifier [../psa/best/res38_cls.pth]
#   AFF_WEIGHTS  a given mixed affinity net, e.g. the published psa_ourbest_fold{F}_affnet.pth [unset:
#                trained]: checked at once (strictly, a DataParallel `module.` prefix accepted; another
#                network's checkpoint stops the run), then read as it is by both walks; the mixed affinity
#                training and its CRF label inputs are skipped (the boundary net and target maps are not:
#                the walks read the maps)
#   OUT          output root [./out/fold$FOLD]
#
# Outputs under $OUT: boundary_model/resnet38_boundary_fold$FOLD.pth,
# boundary_pred/boundary_fold${FOLD}_kernel${KERNEL}_threshold${THRESHOLD}/ (target maps),
# affmodel/resnet38_affmixed_fold$FOLD.pth (not with AFF_WEIGHTS), rw_stage1/ rw_cam_stage1/ rw_stage2/ rw_cam_stage2/
# (label PNGs and score dicts), evallog.txt, and timings.tsv (`step<TAB>seconds` per step, the
# time of its last run). A rerun skips what is done: each net when its checkpoint exists (delete
# it to retrain) and every image whose outputs exist; after retraining a net, delete the outputs
# made from it (or all of $OUT), or they are kept as they are. An interrupted training goes on
# from its last finished epoch (--resume).
set -e
cd "$(dirname "$0")"

DRIVER=run_retab
. ../psa/driver_lib.sh

# A given affinity net is checked before anything is trained or written: a wrong file stops the run now.
if [ -n "${AFF_WEIGHTS:-}" ]; then
    error=$("$PYTHON" -m retab check_weights --kind aff --backbone "$BACKBONE" --width "$WIDTH" --weights "$AFF_WEIGHTS" 2>&1 >/dev/null) ||
        die "AFF_WEIGHTS: ${error#check_weights: error: }"
fi
CROP_SIZE=${CROP_SIZE:-448}
LA_ALPHA=${LA_ALPHA:-4}
HA_ALPHA=${HA_ALPHA:-32}
BATCH_SIZE=${BATCH_SIZE:-8}
BOUNDARY_EPOCHS=${BOUNDARY_EPOCHS:-8}
AFF_EPOCHS=${AFF_EPOCHS:-8}
BOUNDARY_LR=${BOUNDARY_LR:-0.001}
AFF_LR=${AFF_LR:-0.01}
KERNEL=${KERNEL:-0}
THRESHOLD=${THRESHOLD:-0.5}
OPTIMIZER=${OPTIMIZER:-sgd}
ALPHA=${ALPHA:-16}
BETA=${BETA:-8}
LOGT=${LOGT:-8}
INFER_LIST=${INFER_LIST:-voc12/train_aug.txt}
PSA_OUT=${PSA_OUT:-../psa/out}
PSA_CLS=${PSA_CLS:-../psa/best/res38_cls.pth}
OUT=${OUT:-./out/fold$FOLD}

BOUNDARY_CKPT=$OUT/boundary_model/resnet38_boundary_fold$FOLD.pth
BOUNDARY_TARGET_DIR=$OUT/boundary_pred/boundary_fold${FOLD}_kernel${KERNEL}_threshold${THRESHOLD}
AFF_CKPT=${AFF_WEIGHTS:-$OUT/affmodel/resnet38_affmixed_fold$FOLD.pth}
RW1_DIR=$OUT/rw_stage1
RW1_CAM_DIR=$OUT/rw_cam_stage1
RW2_DIR=$OUT/rw_stage2
RW2_CAM_DIR=$OUT/rw_cam_stage2
EVALLOG=$OUT/evallog.txt
export RETAB_TIMINGS="$OUT/timings.tsv"

# ---------------------------------------------------------------- PSA outputs
# the CRF labels are the mixed affinity training's input only; published layout: psa_initcam/psa_trainaug_cam
# and psa_afflabel/psa_trainaug_crf_{4.0,32.0}
CRF_DIRS="$(crf_dir_name "$LA_ALPHA") $(crf_dir_name "$HA_ALPHA")"
[ -z "${AFF_WEIGHTS:-}" ] || CRF_DIRS=
# shellcheck disable=SC2086  # CRF_DIRS holds two names or none
"$PYTHON" -m retab use_psa_outputs --psa_out "$PSA_OUT" --crf_dirs $CRF_DIRS
CAM_DIR=psa_initcam/psa_trainaug_cam
LA_DIR=psa_afflabel/$(crf_dir_name "$LA_ALPHA")
HA_DIR=psa_afflabel/$(crf_dir_name "$HA_ALPHA")

make_out_dir "$OUT"

# ---------------------------------------------------------------- dataset and lists
RETAB_STEP=dataset "$PYTHON" -m retab use_dataset ${VOC12HOME:+--voc12home "$VOC12HOME"} VOC2012 ../psa/VOC2012 \
    --mini_voc "$MINI_VOC" ${SYNTH_SCALE:+--scale "$SYNTH_SCALE"} --link VOC2012 --list_dir voc12

# ---------------------------------------------------------------- boundary net and target maps
RETAB_STEP=train_boundary "$PYTHON" train_boundary.py --fold "$FOLD" --voc12_root VOC2012 --list_dir voc12 \
    --session_name "$(basename "$BOUNDARY_CKPT" .pth)" --out_dir "$(dirname "$BOUNDARY_CKPT")" \
    --tblog_dir "$OUT/tblog_boundary" --batch_size "$BATCH_SIZE" --max_epoches "$BOUNDARY_EPOCHS" \
    --lr "$BOUNDARY_LR" --optimizer "$OPTIMIZER" ${MOMENTUM:+--momentum "$MOMENTUM"} --crop_size "$CROP_SIZE" \
    --weights "${WEIGHTS-auto}" --fallback_weights "$PSA_CLS" \
    ${NUM_WORKERS:+--num_workers "$NUM_WORKERS"} --resume --device "$DEVICE" --backbone "$BACKBONE" --width "$WIDTH" --seed "$SEED" ${AMP:+--amp "$AMP"}

RETAB_STEP=prop_boundary_target "$PYTHON" prop_boundary_target.py --voc12_root VOC2012 \
    --infer_list voc12/train_aug.txt --weights "$BOUNDARY_CKPT" --kernel "$KERNEL" --threshold "$THRESHOLD" \
    --out_dir "$BOUNDARY_TARGET_DIR" ${NUM_WORKERS:+--num_workers "$NUM_WORKERS"} \
    --device "$DEVICE" --backbone "$BACKBONE" --width "$WIDTH" --seed "$SEED" ${AMP:+--amp "$AMP"}

# ---------------------------------------------------------------- mixed affinity net
if [ -n "${AFF_WEIGHTS:-}" ]; then
    say "using the given affinity net AFF_WEIGHTS=$AFF_CKPT: no mixed affinity training"
else
    RETAB_STEP=train_affmixed_boundary "$PYTHON" train_affmixed_boundary.py --fold "$FOLD" --voc12_root VOC2012 \
        --train_list voc12/train_aug.txt --list_dir voc12 \
        --base_list "voc12/trainaug_fold${FOLD}_base.npy" --novel_list "voc12/trainaug_fold${FOLD}_novel.npy" \
        --la_crf_dir "$LA_DIR" --ha_crf_dir "$HA_DIR" --targetpixel_dir "$BOUNDARY_TARGET_DIR" \
        ${GRID_SAMPLING:+--grid_sampling "$GRID_SAMPLING"} \
        --session_name "$(basename "$AFF_CKPT" .pth)" --out_dir "$(dirname "$AFF_CKPT")" \
        --tblog_dir "$OUT/tblog_aff" --batch_size "$BATCH_SIZE" --max_epoches "$AFF_EPOCHS" --lr "$AFF_LR" \
        --optimizer "$OPTIMIZER" ${MOMENTUM:+--momentum "$MOMENTUM"} \
        --crop_size "$CROP_SIZE" --weights "${WEIGHTS-auto}" --fallback_weights "$PSA_CLS" \
        ${NUM_WORKERS:+--num_workers "$NUM_WORKERS"} \
        --resume --device "$DEVICE" --backbone "$BACKBONE" --width "$WIDTH" --seed "$SEED" ${AMP:+--amp "$AMP"}
fi

# ---------------------------------------------------------------- boundary-aware two-stage random walk
RETAB_STEP=rw_stage1 "$PYTHON" infer_aff_cam_boundary.py --voc12_root VOC2012 --infer_list "$INFER_LIST" \
    --weights "$AFF_CKPT" --cam_dir "$CAM_DIR" --targetpixel_dir "$BOUNDARY_TARGET_DIR" ${GRID_SAMPLING:+--grid_sampling "$GRID_SAMPLING"} \
    --out_rw "$RW1_DIR" --out_rw_cam "$RW1_CAM_DIR" --alpha "$ALPHA" --beta "$BETA" --logt "$LOGT" \
    ${NUM_WORKERS:+--num_workers "$NUM_WORKERS"} --device "$DEVICE" --backbone "$BACKBONE" --width "$WIDTH" --seed "$SEED" ${AMP:+--amp "$AMP"}

RETAB_STEP=rw_stage2 "$PYTHON" infer_aff_cam_boundary_secondary.py --voc12_root VOC2012 --infer_list "$INFER_LIST" \
    --weights "$AFF_CKPT" --cam_dir "$RW1_CAM_DIR" --targetpixel_dir "$BOUNDARY_TARGET_DIR" ${GRID_SAMPLING:+--grid_sampling "$GRID_SAMPLING"} \
    --out_rw "$RW2_DIR" --out_rw_cam "$RW2_CAM_DIR" --beta "$BETA" --logt "$LOGT" \
    ${NUM_WORKERS:+--num_workers "$NUM_WORKERS"} --device "$DEVICE" --backbone "$BACKBONE" --width "$WIDTH" --seed "$SEED" ${AMP:+--amp "$AMP"}

# ---------------------------------------------------------------- evaluation on train
RETAB_STEP=eval_cam "$PYTHON" evaluation_boundary.py --list voc12/train.txt --predict_dir "$CAM_DIR" \
    --gt_dir VOC2012/SegmentationClassAug --targetpixel_dir None --logfile "$EVALLOG" \
    --comment "cam fold$FOLD (train)" --type npy --curve True --fold "$FOLD"

RETAB_STEP=eval_rw "$PYTHON" evaluation_boundary.py --list voc12/train.txt --predict_dir "$RW2_DIR" \
    --gt_dir VOC2012/SegmentationClassAug --targetpixel_dir None --logfile "$EVALLOG" \
    --comment "retab rw2 fold$FOLD (train)" --type png --fold "$FOLD"

RETAB_STEP=eval_rw_searchbg "$PYTHON" evaluation_boundary.py --list voc12/train.txt --predict_dir "$RW2_CAM_DIR" \
    --gt_dir VOC2012/SegmentationClassAug --targetpixel_dir None --logfile "$EVALLOG" \
    --comment "retab rw2 fold$FOLD (train) searchbg" --type npy_new --curve True --fold "$FOLD"

say "done; results (all/base/novel mIoU, fold $FOLD) in $EVALLOG, step times in $RETAB_TIMINGS"
