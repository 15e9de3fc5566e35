#!/usr/bin/env bash
# The CPU rehearsal of the paper path (README, "CPU rehearsal"): the paper profile's own code at the
# paper's sizes, end to end through Snakemake, on one CPU machine (params/profiles/rehearsal.yaml:
# the paper profile plus a listed set of overrides).
#
#   bash scripts/rehearse.sh            # everything (make rehearse)
#   bash scripts/rehearse.sh --slice    # CI's slice (make rehearse-slice, tests/test_rehearsal.py)
#
# Steps: fabricate the ImageNet files (scripts/fabricate_imagenet.py) and check them (spgnet
# weights check); start Snakemake on one training (full: t9-r50-d256 at crop 769; slice:
# voc-spgnet at 513), kill the whole process tree with SIGKILL once its latest.pt exists (as a power
# loss would: Snakemake, the job's shell, torchrun and both ranks with their data loaders), then, as
# README's "Paper scale on GPUs" says, `--unlock` and the same command with `--rerun-incomplete`
# on all the targets, and check that the training log says `spgnet train: resuming from iteration
# K`; then the paper report from the rehearsal's results (spgnet report --profile paper --results
# results/rehearsal: every cell marked where its run differs from the paper profile's schedule),
# and a summary: wall time, peak memory, per-job seconds and peak RSS (Snakemake's benchmark
# files), the CPU. Runs under /usr/bin/time -v when it is installed.
#
# Environment: REHEARSAL_DATA_ROOT (data/rehearsal), CORES (2), REHEARSAL_MEM_MB (20000: what
# Snakemake may reserve; the profile's mem_mb keep heavy jobs one at a time), MLFLOW_TRACKING_URI
# (default: a store of its own, results/rehearsal/mlflow.db, not the project's).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

mode=full
case "${1:-}" in
  "") ;;
  --slice) mode=slice ;;
  *) echo "usage: bash scripts/rehearse.sh [--slice]" >&2; exit 2 ;;
esac

if [ -z "${REHEARSE_TIMED:-}" ]; then
  if [ -x /usr/bin/time ]; then
    REHEARSE_TIMED=1 exec /usr/bin/time -v bash "${BASH_SOURCE[0]}" "$@"
  fi
  echo "rehearse: /usr/bin/time not found (apt-get install time); wall time and peak memory from this script only" >&2
fi

profile=rehearsal
data_root="${REHEARSAL_DATA_ROOT:-data/rehearsal}"
results="results/$profile"
cores="${CORES:-2}"
mem_mb="${REHEARSAL_MEM_MB:-20000}"
export MLFLOW_TRACKING_URI="${MLFLOW_TRACKING_URI:-sqlite:///$PWD/$results/mlflow.db}"
mkdir -p "$results/logs"
start_s=$(date +%s)

say() { echo "rehearse: $*" >&2; }

# ---- peak memory of the machine (MemTotal - MemAvailable), sampled every second ----
peak_file="$results/logs/rehearse-peak-memory.txt"
used_mb() { awk '/^MemTotal:/ {t = $2} /^MemAvailable:/ {a = $2} END {printf "%d\n", (t - a) / 1024}' /proc/meminfo; }
baseline_mb=$(used_mb)
( peak=0; while sleep 1; do u=$(used_mb); if [ "$u" -gt "$peak" ]; then peak=$u; echo "$peak" > "$peak_file"; fi; done ) &
sampler=$!
trap 'kill "$sampler" 2>/dev/null || true' EXIT

# ---- the targets ----
if [ "$mode" = full ]; then
  kill_run=t9-r50-d256
  # reproduce_spgnet: every evaluation, #Params/#FLOPs, the attention figures; plus what the
  # report reads besides them: the reference scores and the training curves
  read -r -a targets < <(python - "$data_root" <<'PY'
import sys
from spgnet.workflow.plan import make_plan
plan = make_plan("rehearsal", data_root=sys.argv[1])
print(" ".join(["reproduce_spgnet", *plan.reference_files(), plan.curves_figure]))
PY
  )
else
  kill_run=voc-spgnet
  # VOC (trainaug, crop 513) killed after its first iteration and resumed; t9-r50-d256 at crop 769
  # and its AP evaluation of one 1024 x 2048 image
  targets=("$results/runs/voc-spgnet/seed0/eval/voc-spgnet.json" "$results/runs/t9-r50-d256/seed0/eval/t9-r50-d256.json")
fi
[ "${#targets[@]}" -gt 0 ] || { say "no targets (the rehearsal profile's plan failed above)"; exit 1; }
run_dir="$results/runs/$kill_run/seed0"
# (--config last: it takes every word after it)
snakemake_args=(--cores "$cores" --resources "mem_mb=$mem_mb" --rerun-incomplete)
config_args=(--config "profile=$profile" "data_root=$data_root")

say "$mode rehearsal of the paper path on $(nproc) cores: ${targets[*]}"

# ---- ImageNet files: fabricated in torchvision's format, then checked as the paper's are ----
python scripts/fabricate_imagenet.py --profile "$profile" --data-root "$data_root"
spgnet weights check --profile "$profile" --data-root "$data_root"

# ---- a training killed part-way ----
tree() {  # a process and all its descendants (torchrun's ranks run in sessions of their own)
  echo "$1"
  local child
  for child in $(ps -o pid= --ppid "$1" 2>/dev/null); do tree "$child"; done
}
rm -f "$run_dir/latest.pt"
if [ -f "$run_dir/checkpoint.pt" ]; then
  say "$run_dir/checkpoint.pt exists: no kill (delete results/$profile to rehearse from scratch)"
  killed=""
else
  say "phase 1: $kill_run until its latest.pt exists, then SIGKILL to the whole process tree"
  snakemake "${snakemake_args[@]}" "$run_dir/checkpoint.pt" "${config_args[@]}" > "$results/logs/rehearse-phase1.log" 2>&1 &
  first=$!
  while [ ! -f "$run_dir/latest.pt" ]; do
    if ! kill -0 "$first" 2>/dev/null; then
      tail -n 40 "$results/logs/rehearse-phase1.log" >&2
      say "phase 1 ended before $run_dir/latest.pt was written"; exit 1
    fi
    sleep 1
  done
  pids=$(tree "$first")
  kill -STOP $pids 2>/dev/null || true   # freeze the tree: nothing new starts while it is collected
  pids="$pids $(tree "$first")"
  kill -KILL $pids 2>/dev/null || true
  wait "$first" 2>/dev/null || true
  killed=$(python -c 'import sys, torch; print(torch.load(sys.argv[1], map_location="cpu", weights_only=True)["iteration"])' "$run_dir/latest.pt")
  say "killed $kill_run at iteration $killed ($(echo $pids | wc -w) processes)"
  snakemake "${snakemake_args[@]}" --unlock "${targets[@]}" "${config_args[@]}" > /dev/null
fi

# ---- everything, as the README's paper command runs it ----
say "phase 2: snakemake ${snakemake_args[*]} ${targets[*]} ${config_args[*]}"
set +e
snakemake "${snakemake_args[@]}" "${targets[@]}" "${config_args[@]}" 2>&1 | tee "$results/logs/rehearse-phase2.log" \
  | { grep --line-buffered -E "^(rule |localrule |Finished job|Error|.*Exception)" >&2; true; }
status=${PIPESTATUS[0]}
set -e
[ "$status" -eq 0 ] || { tail -n 60 "$results/logs/rehearse-phase2.log" >&2; say "snakemake failed (exit $status)"; exit 1; }
if [ -n "$killed" ]; then
  line="spgnet train: resuming from iteration $killed ($run_dir/latest.pt)"
  grep -qF "$line" "$results/logs/train_${kill_run}_seed0.log" || { say "the resumed log lacks: $line"; exit 1; }
  say "resumed: $line"
fi

# ---- the paper report of the rehearsal's results ----
spgnet report --profile paper --data-root "$data_root" --results "$results" --out "reports/$profile/tables.md"
say "reports/$profile/tables.md: the paper profile's report of $results"

# ---- summary ----
kill "$sampler" 2>/dev/null || true
python - "$results" "$baseline_mb" "$(cat "$peak_file" 2>/dev/null || echo 0)" "$(( $(date +%s) - start_s ))" "$mode" \
  <<'PY' | tee "$results/rehearse-summary-$mode.txt"
import csv, sys
from pathlib import Path
from spgnet.runtime.hardware import cpu_model
results, baseline, peak, wall, mode = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
print(f"{mode} rehearsal: {wall / 60:.1f} min wall; machine memory in use at most {peak / 1024:.1f} GiB "
      f"({(peak - baseline) / 1024:.1f} GiB above the {baseline / 1024:.1f} GiB at start); CPU: {cpu_model()}")
print(f"{'job':58} {'s':>8} {'max RSS GiB':>12}")
for path in sorted((results / "benchmarks").rglob("*.tsv")):
    rows = list(csv.DictReader(path.open(), delimiter="\t"))
    if rows:
        rss = float(rows[-1].get("max_rss") or 0) / 1024
        print(f"{str(path.relative_to(results / 'benchmarks'))[:-4]:58} {float(rows[-1]['s']):8.1f} {rss:12.1f}")
PY
