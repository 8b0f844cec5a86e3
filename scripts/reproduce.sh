#!/usr/bin/env bash
# Runs the configs behind a row of experiments/README.md and appends each result, with its
# run directory, machine and date, to experiments/results.tsv.
#
#   scripts/reproduce.sh cub/cam            # one table row: CUB x CAM on VGG16, ResNet-50, Inception-v3
#   scripts/reproduce.sh cub/vgg16_cam      # one config
#   scripts/reproduce.sh paper              # every row of the paper table (54 GPU runs)
#   scripts/reproduce.sh demo-methods       # the CPU-scale comparison: seven methods + centre baseline
#                                           # on the synthetic demo data (minutes on a laptop)
#   scripts/reproduce.sh cub/cam --dry-run  # trains nothing: `wsol preflight` of each config (data
#                                           # check, weights and checksum, the recipe beside
#                                           # wsolevaluation's, the time on this machine)
#
# Extra arguments after the row go to every `wsol train` (e.g. --set device=cpu).
# Paper rows need the data (scripts/prepare_*.sh) and weights (scripts/get_torchvision_weights.sh).
set -eu
cd "$(dirname "$0")/.."
row=${1:?usage: scripts/reproduce.sh ROW|paper|demo-methods [--dry-run] [wsol train args...]}
shift
dry_run=0
if [ "${1:-}" = --dry-run ]; then dry_run=1; shift; fi
wsol="cargo run --release --quiet --"
results=experiments/results.tsv
[ -f "$results" ] || printf 'date\tmachine\trow\tconfig\trun_dir\ttop1_cls\ttop1_loc\tgt_known_loc\tmaxboxacc\tmaxboxacc_v2\tpxap\n' > "$results"
machine="$(uname -m) $(nproc) cores"
if command -v nvidia-smi >/dev/null; then machine="$machine, $(nvidia-smi --query-gpu=name --format=csv,noheader | head -n1)"; fi

value() { grep -o "\"$2\": *[-0-9.e]*" "$1" | head -n1 | sed 's/.*: *//' || true; }

# run ROW CONFIG OUT [train args...]: trains (and evaluates) one config, appends its row.
run() {
    local row=$1 config=$2 out=$3
    shift 3
    if [ $dry_run = 1 ]; then
        $wsol preflight --config "$config" "$@" || echo "$row: not ready ($config)"
        return 0
    fi
    $wsol train --config "$config" --out "$out" --quiet "$@"
    local m=$out/metrics.json line
    line="$(date -u +%F)\t$machine\t$row\t$config\t$out"
    for k in top1_cls top1_loc gt_known_loc maxboxacc maxboxacc_v2 pxap; do line="$line\t$(value "$m" $k)"; done
    printf "$line\n" >> "$results"
    printf "$line\n"
}

stamp=$(date -u +%Y%m%dT%H%M%S)
case "$row" in
demo-methods)
    dir=experiments/runs/demo-methods-$stamp
    for m in cam has cutmix adl acol spg bas; do
        extra=()
        # The two heads without batch norm (ACoL's and SPG's branches) do not learn at the
        # demo's lr 0.2 (tried: chance level), so they run at 0.02.
        case $m in acol | spg) extra=(--set train.optimizer.lr=0.02 --set model.acol.width=64) ;; esac
        # BAS's classifier (ReLU'd class maps, no batch norm) does not learn from scratch
        # here (tried lr 0.002-0.2: chance level or dead class maps); as its authors start
        # from pretrained weights, it starts from the CAM run's backbone, at lr 0.02.
        case $m in bas) extra=(--set train.optimizer.lr=0.02 --set "model.pretrained=$dir/cam/checkpoints/last.safetensors") ;; esac
        [ $dry_run = 1 ] && [ $m = bas ] && continue
        run "demo/$m" configs/demo.yaml "$dir/$m" --set model.head=$m "${extra[@]}" "$@"
    done
    [ $dry_run = 1 ] && exit 0
    # BAS's map as its authors' CUB inference makes it: the mean of the top-5 (all) classes' maps.
    $wsol eval "$dir/bas" --set model.bas.top_k=5 --out "$dir/bas-top5" --quiet > /dev/null
    line="$(date -u +%F)\t$machine\tdemo/bas-top5\tconfigs/demo.yaml\t$dir/bas-top5"
    for k in top1_cls top1_loc gt_known_loc maxboxacc maxboxacc_v2 pxap; do line="$line\t$(value "$dir/bas-top5/metrics.json" $k)"; done
    printf "$line\n" >> "$results"
    printf "$line\n"
    $wsol eval-cams --metadata data/synth/metadata/test --centre-baseline --image-size 48 \
        --cam-curve-interval 0.01 --out "$dir/centre" --quiet > /dev/null
    line="$(date -u +%F)\t$machine\tdemo/centre-baseline\t-\t$dir/centre"
    for k in top1_cls top1_loc gt_known_loc maxboxacc maxboxacc_v2 pxap; do line="$line\t$(value "$dir/centre/metrics.json" $k)"; done
    printf "$line\n" >> "$results"
    printf "$line\n"
    ;;
paper)
    for d in cub ilsvrc openimages; do
        for m in cam has acol spg adl cutmix; do
            if [ $dry_run = 1 ]; then "$0" "$d/$m" --dry-run "$@"; else "$0" "$d/$m" "$@"; fi
        done
    done
    ;;
*/*)
    d=${row%%/*} name=${row#*/}
    if [ -f "configs/$d/$name.yaml" ]; then
        run "$row" "configs/$d/$name.yaml" "experiments/runs/$d-$name-$stamp" "$@"
    else
        found=0
        for bb in vgg16 resnet50 inception_v3; do
            c=configs/$d/${bb}_$name.yaml
            [ -f "$c" ] || continue
            found=1
            run "$d/${bb}_$name" "$c" "experiments/runs/$d-${bb}_$name-$stamp" "$@"
        done
        [ $found = 1 ] || { echo "error: no configs for row $row (expected configs/$d/<backbone>_$name.yaml)" >&2; exit 1; }
    fi
    ;;
*)
    echo "error: unknown row $row (DATASET/METHOD, DATASET/BACKBONE_METHOD, paper or demo-methods)" >&2
    exit 1
    ;;
esac
