"""The published code's constants that several modules share, each defined here once (SPEC 2-5).

The 20 classes, the folds and the label values are VOC's and live in retab.voc.
"""

FEATURE_STRIDE = 8  # output stride of the backbones: one feature-grid cell per 8 x 8 pixels
AFFINITY_RADIUS = 5  # pixel pairs within this radius on the feature grid (train_aff, infer_aff)
WALK_ALPHA = 16  # the walks' background: (1 - max CAM) ** alpha
WALK_BETA = 8  # transition matrix: affinity ** beta, then column-normalised
WALK_LOGT = 8  # the walk applies the transition 2 ** logt times
CRF_LOW_ALPHA = 4  # infer_cls: background exponent of the confident-background ("la") CRF labels
CRF_HIGH_ALPHA = 32  # infer_cls: background exponent of the confident-foreground ("ha") CRF labels
IMAGENET_PARAMS_NAME = "ilsvrc-cls_rna-a1_cls1000_ep-0001.params"  # ResNet-38's ImageNet weights (MXNet)
IMAGENET_PARAMS_DIR = "pretrained_model"  # where the published drivers read them, beside each script
