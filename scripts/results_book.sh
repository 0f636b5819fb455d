#!/usr/bin/env bash
# Every number of RESULTS.md: batchaug sweep + batchaug eval + batchaug report on the shared CIFAR-10.
# Resumable: run it again after an interruption and it finishes what is missing (sweeps skip finished
# runs and resume killed ones; evaluations already written are kept). Each part's wall time is appended
# to $OUT/times.tsv.
#
#   nice -n 10 scripts/results_book.sh                 # from the repository root
#   BATCHAUG="python -m batchaug" OUT=runs/book scripts/results_book.sh
#
# The scale (see RESULTS.md, "What was cut"): ResNet-20, B = 64, the full 50,000 training images,
# 600 steps (0.77 epochs) per run, validation on 5,000 test images every 100 steps; the SBA layer study
# at 200 steps.
set -euo pipefail
BATCHAUG=${BATCHAUG:-batchaug}
OUT=${OUT:-runs/book}
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-PASSIVE}  # sleeping, not spinning, OpenMP threads on a shared CPU
Q=configs/quick/cifar10_resnet20.yaml
COMMON=(data.subset=null data.val_subset=5000 train.eval_every=100 train.log_every=20 train.progress=false
        train.tensorboard=false)
RANDAUG='[standard, {name: randaugment, num_ops: 3, magnitude: 4}, cutout]'
BENCH15='[gaussian_noise,shot_noise,impulse_noise,defocus_blur,glass_blur,motion_blur,zoom_blur,snow,frost,fog,brightness,contrast,elastic_transform,pixelate,jpeg_compression]'
mkdir -p "$OUT"

part() {  # part NAME COMMAND...: run it and log its wall time
  local name=$1 start=$SECONDS
  shift
  echo "== $(date -u +%FT%TZ) part $name: $*"
  "$@"
  printf '%s\t%s\t%d\n' "$name" "$(date -u +%FT%TZ)" $((SECONDS - start)) >> "$OUT/times.tsv"
}

corruptions() {  # corruptions RUN MODES: the 15 benchmark corruptions x 5 severities of 500 test images
  [ -f "$1/eval/corruptions.json" ] && return 0
  $BATCHAUG eval "$1" --checkpoint last --suite corruptions --modes "$2" --limit 500 \
    --option "corruptions.names=$BENCH15"
}

# A. Baseline (M = 1) against BA (M = 2, 4, 8) at 600 steps; seed 0 first, seed 1 at the end (part F)
part ba_seed0 $BATCHAUG sweep $Q "${COMMON[@]}" train.max_steps=600 method.name=ba method.m=1,2,4,8 --seeds 0 \
  --out "$OUT/ba"
# B. SBA (M = 4, k drawn from the registry's layers of resnet20: features_out) and its η sweep
part sba_eta $BATCHAUG sweep $Q "${COMMON[@]}" train.max_steps=600 method.name=sba method.m=4 \
  method.eta=0,0.01,0.1,1 --seeds 0 --out "$OUT/sba_eta"
# C. Split BN (weak = cutout on the main BN, strong = RandAugment on the auxiliary BN) against RandAugment alone
part splitbn $BATCHAUG sweep $Q "${COMMON[@]}" train.max_steps=600 method.name=splitbn method.weak=cutout \
  "method.strong=$RANDAUG" --seeds 0 --out "$OUT/splitbn/weak_augment"
part randaugment $BATCHAUG sweep $Q "${COMMON[@]}" train.max_steps=600 method.name=baseline \
  "method.policy=$RANDAUG" --seeds 0 --out "$OUT/splitbn/randaugment"
part corruptions_splitbn corruptions "$OUT/splitbn/weak_augment/seed=0" main,alpha=0.25,alpha=0.5,alpha=0.75,aux
part corruptions_randaugment corruptions "$OUT/splitbn/randaugment/seed=0" default
part corruptions_standard corruptions "$OUT/ba/method.m=1,seed=0" default
# D. Regime adaptation: a plain batch of 64 x 4 distinct images, the same 600 steps
part ra $BATCHAUG sweep $Q "${COMMON[@]}" train.max_steps=600 method.name=ra method.m=4 --seeds 0 --out "$OUT/ra"
# E. SBA's cost ratio and accuracy against the layer k: SBA (p = 0.5) and latent BA (p = 1) at each k, 200 steps
part sba_layers $BATCHAUG sweep $Q "${COMMON[@]}" train.max_steps=200 train.eval_every=50 method.name=sba \
  method.m=4 method.layer_choice=fixed "method.layers=[layer1,layer2,layer3]" method.fixed_layer=layer1,layer2,layer3 \
  method.p=0.5,1.0 --seeds 0 --out "$OUT/sba_layers"
# F. The second seed of A (the first one's runs are skipped)
part ba_seed1 $BATCHAUG sweep $Q "${COMMON[@]}" train.max_steps=600 method.name=ba method.m=1,2,4,8 --seeds 0,1 \
  --out "$OUT/ba"

# The reports (seconds; they read the run directories only)
part reports bash -c "
  $BATCHAUG report '$OUT/ba' --out '$OUT/report_ba' --title 'Baseline vs BA at equal steps'
  $BATCHAUG report '$OUT/ba/method.m=1,seed=0' '$OUT/ba/method.m=1,seed=1' '$OUT/ba/method.m=4,seed=0' \
    '$OUT/ba/method.m=4,seed=1' '$OUT/ra' --out '$OUT/report_ra' --title 'Regime adaptation vs BA (M = 4)'
  $BATCHAUG report '$OUT/sba_eta' '$OUT/ba' --out '$OUT/report_sba' --title 'SBA vs BA and baseline'
  $BATCHAUG report '$OUT/sba_layers' --out '$OUT/report_sba_layers' --title 'SBA against the layer k'
  $BATCHAUG report '$OUT/splitbn' '$OUT/ba/method.m=1,seed=0' --out '$OUT/report_splitbn' \
    --title 'Split BN vs RandAugment alone'
"
