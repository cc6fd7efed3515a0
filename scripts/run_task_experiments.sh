#!/usr/bin/env bash
# The experiment matrix: prune with one data set, fine-tune on another, evaluate on every task.
# The rows are defined once, in lib/experiments/design.py (listed at the end of --help; wikitext2 as the
# fine-tune data means causal-LM fine-tuning with dense_ft/finetune_lm.py).
#
# plus the reference rows: the dense model and every pruned model before fine-tuning. Every
# model is evaluated with scripts/eval_tasks.py (WikiText2 PPL, SQuAD v2, GSM8K, BoolQ), then
# scripts/summarize_experiments.py writes $OUT/results.md and $OUT/results.png.
#
# Usage:
#   bash scripts/run_task_experiments.sh --preset cpu-smoke --data_dir ../shared/data --out out/smoke
#   bash scripts/run_task_experiments.sh --preset cpu --data_dir ../shared/data --out out/cpu
#   bash scripts/run_task_experiments.sh --preset paper --data_dir ../shared/data --out out/paper
#   EXPS="baseline exp1" NSAMPLES=16 bash scripts/run_task_experiments.sh --dry_run
#   SEEDS="0 1 2" FT_SEEDS=0 bash scripts/run_task_experiments.sh ...   # 3 pruned models per calibration set
#
# Flags: --preset cpu-smoke|cpu|paper, --model M, --data_dir D, --out O, --exps "exp1 exp2",
# --seeds "0 1 2", --ft_seeds "0", --nsamples N, --seqlen N, --sparsity_ratios "R1 R2 R3", --max_steps N,
# --epochs N, --lr LR, --eval_limits "squad=40 gsm8k=20", --nll_limits "squad=500 gsm8k=300",
# --dry_run (print the steps and their commands, run nothing).
#
# Calibration seeds: every seed in SEEDS gets its own pruned model per calibration data set, and
# every seed in FT_SEEDS (default: all of SEEDS; a subset seeds only the pruned rows) its own
# fine-tune of it (Trainer --seed too). Seed 0 keeps the plain names; seed N writes pruned/<tag>_seedN
# and <exp>_seedN, so adding seeds to a finished single-seed run reuses it. results.md shows
# mean ± sd over the seeds of each row and 95% paired-bootstrap intervals for every difference.
# Every setting is also an environment variable (listed by --help). Precedence: flag > environment >
# preset > default. Without a preset the protocol is the design notes' (nsamples 128, seqlen
# 2048, 3 epochs, lr 2e-5, batch 4 x accumulation 4, full evaluation) on $MODEL. Every numeric
# setting is checked before the first step (one error line naming the variable).
#
# Layout of $OUT: dense/eval.json; pruned/<calibration>/{results/,model/,eval.json}
# (one pruned model per calibration data set, shared by the experiments that use it);
# <exp>/{model/,eval.json}; logs/<step>.log; markers/<step>.done; results.md; results.png
# (seed N != 0: pruned/<calibration>_seedN/ and <exp>_seedN/, steps named ..._seedN).
#
# Resuming: a step that finished has markers/<step>.done (its command and its outputs) and is
# skipped on a rerun while all its outputs are still there (else it runs again); a finished step whose command has changed stops the run (use another $OUT, or delete
# that marker and those of the steps after it). An interrupted fine-tune resumes from its
# latest complete checkpoint-* (--resume_from_checkpoint latest). results.md lists every expected
# row, "no data" for one whose eval.json is missing. A failed step stops the script with
# its exit status and names its log file.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

die() { echo "error: $*" >&2; exit 2; }
# EXPERIMENTS=(names), CALIBRATION[name], FINETUNE[name]: from lib/experiments/design.py
MATRIX=$("${PYTHON:-python}" "$REPO/scripts/experiment_matrix.py" --bash) ||
  die "could not read the experiment matrix with '${PYTHON:-python} scripts/experiment_matrix.py'; set PYTHON to the project's python"
eval "$MATRIX"
usage() {
  sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'
  echo; echo "Environment variables and their defaults (without a preset):"
  sed -n '/^PYTHON=/,/^EVAL_ARGS=/p' "${BASH_SOURCE[0]}" | sed 's/^/  /'
  echo; echo "The experiment matrix (lib/experiments/design.py):"
  "${PYTHON:-python}" "$REPO/scripts/experiment_matrix.py"
}

PRESET=${PRESET:-}
DRY_RUN=${DRY_RUN:-}
while (($#)); do
  case $1 in
    --preset) PRESET=${2:?--preset needs a name}; shift ;;
    --model) MODEL=${2:?}; shift ;;
    --data_dir) DATA_DIR=${2:?}; shift ;;
    --out) OUT=${2:?}; shift ;;
    --exps) EXPS=${2:?}; shift ;;
    --seeds) SEEDS=${2:?}; shift ;;
    --ft_seeds) FT_SEEDS=${2:?}; shift ;;
    --nll_limits) EVAL_NLL_LIMITS=${2:?}; shift ;;
    --nsamples) NSAMPLES=${2:?}; shift ;;
    --seqlen) SEQLEN=${2:?}; shift ;;
    --sparsity_ratios) SPARSITY_RATIOS=${2:?}; shift ;;
    --max_steps) FT_MAX_STEPS=${2:?}; shift ;;
    --epochs) FT_EPOCHS=${2:?}; shift ;;
    --lr) FT_LR=${2:?}; shift ;;
    --eval_limits) EVAL_LIMITS=${2:?}; shift ;;
    --dry_run) DRY_RUN=1 ;;
    -h|--help) usage; exit 0 ;;
    *) die "unknown argument '$1'; see --help" ;;
  esac
  shift
done

# Presets fill what neither a flag nor the environment set.
case $PRESET in
  "") ;;
  cpu-smoke)  # the default model, the whole matrix in < 60 min on 2 CPU cores: measured alone on 2 cores,
    # an evaluation ~2.5 min, a fine-tune ~2 min, a pruning ~0.5 min; 13 + 7 + 5 of them ~50 min
    NSAMPLES=${NSAMPLES:-8}
    SEQLEN=${SEQLEN:-256}
    FT_MAX_STEPS=${FT_MAX_STEPS:-8}
    FT_LR=${FT_LR:-1e-4}
    FT_BATCH_SIZE=${FT_BATCH_SIZE:-4}
    FT_GRAD_ACCUM=${FT_GRAD_ACCUM:-1}
    FT_MAX_LENGTH=${FT_MAX_LENGTH:-384}
    FT_BLOCK_SIZE=${FT_BLOCK_SIZE:-256}
    FT_SAVE_STEPS=${FT_SAVE_STEPS:-5}
    FT_LOGGING_STEPS=${FT_LOGGING_STEPS:-2}
    EVAL_WINDOWS=${EVAL_WINDOWS:-8}
    EVAL_LIMITS=${EVAL_LIMITS:-"squad=32 gsm8k=16 boolq=48"}
    EVAL_MAX_NEW_TOKENS=${EVAL_MAX_NEW_TOKENS:-"squad=16 gsm8k=48"}
    EVAL_BATCH_SIZE=${EVAL_BATCH_SIZE:-16}
    # idle OpenMP threads sleep instead of spinning: on a shared, oversubscribed CPU spinning made
    # a forward pass ~6x slower
    export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-PASSIVE}
    ;;
  cpu)  # the default model with sizes that can show real effects (issue 11): answer NLL on 500 SQuAD /
    # 300 GSM8K examples, generation on 200 / 100, BoolQ 500, PPL 64 x 512, 3 calibration seeds (pruned
    # rows; fine-tunes on seed 0, compared by paired intervals). One evaluation at these sizes costs
    # ~21 CPU-minutes (measured on a subset, one thread), so the preset runs the SQuAD question (exp1,
    # exp2: 9 evaluations, est. 2.5-3.5 h on 2 cores); --exps "exp1 exp2 exp3 exp4" adds GSM8K later
    # (resumes). FT_MAX_STEPS 60: where the measured SQuAD eval loss flattens (see the README).
    EXPS=${EXPS:-exp1 exp2}
    NSAMPLES=${NSAMPLES:-32}
    SEQLEN=${SEQLEN:-512}
    SEEDS=${SEEDS:-0 1 2}
    FT_SEEDS=${FT_SEEDS:-0}
    FT_MAX_STEPS=${FT_MAX_STEPS:-60}
    FT_LR=${FT_LR:-1e-4}
    FT_BATCH_SIZE=${FT_BATCH_SIZE:-4}
    FT_GRAD_ACCUM=${FT_GRAD_ACCUM:-1}
    FT_MAX_LENGTH=${FT_MAX_LENGTH:-384}
    FT_BLOCK_SIZE=${FT_BLOCK_SIZE:-256}
    FT_SAVE_STEPS=${FT_SAVE_STEPS:-20}
    FT_LOGGING_STEPS=${FT_LOGGING_STEPS:-10}
    EVAL_WINDOWS=${EVAL_WINDOWS:-64}
    EVAL_SEQLEN=${EVAL_SEQLEN:-512}
    EVAL_LIMITS=${EVAL_LIMITS:-"squad=200 gsm8k=100 boolq=500"}
    EVAL_NLL_LIMITS=${EVAL_NLL_LIMITS:-"squad=500 gsm8k=300"}
    EVAL_MAX_NEW_TOKENS=${EVAL_MAX_NEW_TOKENS:-"squad=16 gsm8k=48"}
    EVAL_BATCH_SIZE=${EVAL_BATCH_SIZE:-16}
    export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-PASSIVE}
    ;;
  paper)  # the design notes: Llama-2-7b, nsamples 128, seqlen 2048, 3 epochs, lr 2e-5, bf16, full eval
    MODEL=${MODEL:-meta-llama/Llama-2-7b-hf}
    NSAMPLES=${NSAMPLES:-128}
    SEQLEN=${SEQLEN:-2048}
    FT_EPOCHS=${FT_EPOCHS:-3}
    FT_LR=${FT_LR:-2e-5}
    FT_BF16=${FT_BF16:-1}
    FT_ARGS=${FT_ARGS:---gradient_checkpointing}
    EVAL_DTYPE=${EVAL_DTYPE:-bfloat16}
    ;;
  *) die "unknown preset '$PRESET'; use cpu-smoke, cpu or paper" ;;
esac

PYTHON=${PYTHON:-python}
MODEL=${MODEL:-smollm2-135m}
DATA_DIR=${DATA_DIR:-}                      # empty: the CLIs' default (env WANDA_DATA_DIR, else the Hub)
OUT=${OUT:-out/task_experiments}
EXPS=${EXPS:-${EXPERIMENTS[*]}}
SEED=${SEED:-0}                             # evaluation seed (generation is greedy) and SEEDS' default
SEEDS=${SEEDS:-$SEED}                       # calibration seeds: one pruned model per calibration set and seed
FT_SEEDS=${FT_SEEDS:-$SEEDS}                # the seeds whose pruned models are fine-tuned (a subset of SEEDS)
# pruning
SPARSITY_RATIOS=${SPARSITY_RATIOS:-0.35 0.45 0.2}
NSAMPLES=${NSAMPLES:-128}
SEQLEN=${SEQLEN:-2048}
PRUNE_ARGS=${PRUNE_ARGS:-}                  # extra pruning flags, e.g. "--prune_method sparsegpt"
# fine-tuning
FT_LAUNCHER=${FT_LAUNCHER:-$PYTHON}         # e.g. "torchrun --nproc_per_node 8"
FT_EPOCHS=${FT_EPOCHS:-3}
FT_MAX_STEPS=${FT_MAX_STEPS:--1}            # > 0 overrides FT_EPOCHS
FT_LR=${FT_LR:-2e-5}
FT_BATCH_SIZE=${FT_BATCH_SIZE:-4}
FT_GRAD_ACCUM=${FT_GRAD_ACCUM:-4}
FT_MAX_LENGTH=${FT_MAX_LENGTH:-512}         # SQuAD / GSM8K: prompt + answer tokens
FT_BLOCK_SIZE=${FT_BLOCK_SIZE:-512}         # WikiText2: tokens per training window
FT_MAX_TRAIN_SAMPLES=${FT_MAX_TRAIN_SAMPLES:-}  # empty: all (WikiText2: 1000 windows)
FT_EVAL_SAMPLES=${FT_EVAL_SAMPLES:-0}       # the fine-tuning CLI's own eval_loss; 0: none
FT_SAVE_STEPS=${FT_SAVE_STEPS:-200}
FT_SAVE_TOTAL_LIMIT=${FT_SAVE_TOTAL_LIMIT:-1}  # checkpoints kept while a fine-tune runs
FT_LOGGING_STEPS=${FT_LOGGING_STEPS:-10}
FT_BF16=${FT_BF16:-0}
FT_ARGS=${FT_ARGS:-}                        # extra Trainer flags
KEEP_CHECKPOINTS=${KEEP_CHECKPOINTS:-0}     # 0: delete checkpoint-* once a fine-tune has finished
# evaluation
EVAL_TASKS=${EVAL_TASKS:-wikitext2 squad gsm8k boolq}
EVAL_LIMITS=${EVAL_LIMITS:-}                # e.g. "squad=200 gsm8k=50 boolq=500"; empty: everything
EVAL_NLL_LIMITS=${EVAL_NLL_LIMITS:-}        # answer NLL on more examples than generation, e.g. "squad=500 gsm8k=300"
EVAL_WINDOWS=${EVAL_WINDOWS:-}              # perplexity windows; empty: all
EVAL_SEQLEN=${EVAL_SEQLEN:-$SEQLEN}
EVAL_BATCH_SIZE=${EVAL_BATCH_SIZE:-8}
EVAL_MAX_NEW_TOKENS=${EVAL_MAX_NEW_TOKENS:-}  # e.g. "squad=24 gsm8k=128"; empty: 32 / 256
EVAL_DTYPE=${EVAL_DTYPE:-auto}
EVAL_ARGS=${EVAL_ARGS:-}

# every number is checked here, before the first step: a typo fails now, not after hours of earlier steps
need_int() {  # need_int NAME MIN [optional]: $NAME is a whole number >= MIN (or empty, when optional)
  local value=${!1} n
  [[ -z $value && -n ${3:-} ]] && return 0
  [[ $value =~ ^(-?)0*([0-9]+)$ ]] && n=${BASH_REMATCH[1]}${BASH_REMATCH[2]} && ((n >= $2)) ||
    die "$1='$value' must be a whole number >= $2${3:+ (or empty)}"
}
need_number() {  # need_number NAME MIN VALUE: VALUE (of $NAME) is a finite decimal number >= MIN
  [[ $3 =~ ^([0-9]+\.?[0-9]*|\.[0-9]+)([eE][-+]?[0-9]+)?$ ]] && awk -v v="$3" -v m="$2" 'BEGIN { exit !(v + 0 >= m) }' ||
    die "$1='$3' must be a finite number >= $2"
}
need_limits() {  # need_limits NAME: $NAME is empty, one whole number >= 1, or TASK=N words
  local word
  for word in ${!1}; do
    [[ $word =~ ^([a-z0-9_]+=)?0*[1-9][0-9]*$ ]] || die "$1: '$word' must be a whole number >= 1 or TASK=N, e.g. \"squad=200 gsm8k=50\""
  done
}
for name in SEED:0 NSAMPLES:1 SEQLEN:2 FT_MAX_STEPS:-1 FT_BATCH_SIZE:1 FT_GRAD_ACCUM:1 FT_MAX_LENGTH:2 FT_BLOCK_SIZE:2 \
    FT_EVAL_SAMPLES:0 FT_SAVE_STEPS:1 FT_SAVE_TOTAL_LIMIT:1 FT_LOGGING_STEPS:1 EVAL_SEQLEN:2 EVAL_BATCH_SIZE:1; do
  need_int "${name%%:*}" "${name#*:}"
done
need_int FT_MAX_TRAIN_SAMPLES 1 optional
need_int EVAL_WINDOWS 1 optional
need_number FT_EPOCHS 0 "$FT_EPOCHS"
need_number FT_LR 0 "$FT_LR"
((FT_MAX_STEPS > 0)) || awk -v e="$FT_EPOCHS" 'BEGIN { exit !(e > 0) }' || die "FT_EPOCHS='$FT_EPOCHS' must be > 0 unless FT_MAX_STEPS > 0"
[[ $FT_BF16 == [01] ]] || die "FT_BF16='$FT_BF16' must be 0 or 1"
[[ $KEEP_CHECKPOINTS == [01] ]] || die "KEEP_CHECKPOINTS='$KEEP_CHECKPOINTS' must be 0 or 1"
[[ $EVAL_DTYPE =~ ^(auto|float32|bfloat16|float16)$ ]] || die "EVAL_DTYPE='$EVAL_DTYPE' must be auto, float32, bfloat16 or float16"
for name in EVAL_LIMITS EVAL_NLL_LIMITS EVAL_MAX_NEW_TOKENS; do need_limits "$name"; done
read -ra RATIOS <<<"$SPARSITY_RATIOS"
((${#RATIOS[@]} == 3)) || die "SPARSITY_RATIOS needs three numbers (dense, 2:4, top-k shares), got '$SPARSITY_RATIOS'"
for ratio in "${RATIOS[@]}"; do need_number SPARSITY_RATIOS 0 "$ratio"; done
awk -v a="${RATIOS[0]}" -v b="${RATIOS[1]}" -v c="${RATIOS[2]}" 'BEGIN { d = a + b + c - 1; exit !(d < 1e-6 && d > -1e-6) }' ||
  die "SPARSITY_RATIOS='$SPARSITY_RATIOS' must sum to 1"
read -ra SELECTED <<<"$EXPS"
((${#SELECTED[@]})) || die "EXPS is empty; choose from: ${EXPERIMENTS[*]}"
for exp in "${SELECTED[@]}"; do
  [[ -v "CALIBRATION[$exp]" ]] || die "unknown experiment '$exp' in EXPS; choose from: ${EXPERIMENTS[*]}"
done
read -ra SEED_LIST <<<"$SEEDS"
read -ra FT_SEED_LIST <<<"$FT_SEEDS"
((${#SEED_LIST[@]})) || die "SEEDS is empty; give one or more integers, e.g. SEEDS=\"0 1 2\""
for seed in "${SEED_LIST[@]}" "${FT_SEED_LIST[@]}"; do
  [[ $seed =~ ^[0-9]+$ ]] || die "seed '$seed' in SEEDS / FT_SEEDS is not a non-negative integer"
done
for seed in "${FT_SEED_LIST[@]}"; do
  [[ " ${SEED_LIST[*]} " == *" $seed "* ]] || die "FT_SEEDS seed $seed is not in SEEDS ($SEEDS); fine-tuning needs its pruned model"
done
read -ra LAUNCHER <<<"$FT_LAUNCHER"
read -ra PRUNE_EXTRA <<<"$PRUNE_ARGS"
read -ra FT_EXTRA <<<"$FT_ARGS"
read -ra TASKS <<<"$EVAL_TASKS"
read -ra LIMITS <<<"$EVAL_LIMITS"
read -ra NLL_LIMITS <<<"$EVAL_NLL_LIMITS"
read -ra NEW_TOKENS <<<"$EVAL_MAX_NEW_TOKENS"
read -ra EVAL_EXTRA <<<"$EVAL_ARGS"
DATA_ARGS=()
[[ -z $DATA_DIR ]] || DATA_ARGS=(--data_dir "$DATA_DIR")

MARKERS=$OUT/markers
LOGS=$OUT/logs
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
RAN=0
STEP_OUTPUTS=()  # set before run_step: the paths the step writes, listed in its marker

# ------------------------------------------------------------------ steps

signature() {  # the command from its script on, paths under $OUT spelled '$OUT/...' (the interpreter may change)
  while (($#)) && [[ $1 != *.py ]]; do shift; done
  local word quoted words
  printf -v words '%q ' "$(basename "$1")"
  for word in "${@:2}"; do
    if [[ $word == "$OUT" || $word == "$OUT"/* ]]; then
      quoted='$OUT'
      [[ $word == "$OUT" ]] || printf -v quoted '$OUT%q' "${word#"$OUT"}"
    else
      printf -v quoted '%q' "$word"
    fi
    words+="$quoted "
  done
  echo "$words"
}

step_done() {  # step_done NAME SIGNATURE: 0 when finished with this command; a changed command stops the run
  local marker=$MARKERS/$1.done
  [[ -f $marker ]] || return 1
  [[ $(head -n 1 "$marker") == "$2" ]] ||
    die "step $1 finished earlier with other settings ($marker). Use another OUT, or delete that marker and the markers of the steps after it to redo them"
  local line reports=() damaged path
  while IFS= read -r line; do  # a marker certifies outputs that are still there
    [[ $line == "output "* ]] || continue
    path=$OUT/${line#output }
    [[ $path != *.json ]] || reports+=("$path")
    [[ -e $path ]] && continue
    echo "redo $1: its output $path is missing"
    return 1
  done <"$marker"
  # a JSON output must also parse and hold what its readers need; a damaged one is kept aside, not deleted
  if ((${#reports[@]})) && ! damaged=$("$PYTHON" "$REPO/scripts/check_step_outputs.py" "${reports[@]}"); then
    while IFS= read -r line; do
      path=${line%%: it *}
      if [[ -n $DRY_RUN ]]; then
        echo "redo $1: $line"
        continue
      fi
      mv "$path" "$path.damaged-$(date +%Y%m%d-%H%M%S)"
      echo "redo $1: $line; kept it as $path.damaged-<time> and running the step again"
    done <<<"$damaged"
    return 1
  fi
  echo "skip $1: done"
}

run_logged() {  # run_logged NAME COMMAND...: output appended to logs/NAME.log; a failure stops the script
  local name=$1 log=$LOGS/$1.log status=0
  shift
  mkdir -p "$LOGS"
  echo "run  $name (log: $log)"
  printf '### %s %s\n' "$(date '+%F %T')" "$*" >>"$log"
  "$@" >>"$log" 2>&1 || status=$?
  if ((status != 0)); then
    echo "error: step $name failed (exit $status); see its log: $log" >&2
    tail -n 12 "$log" | sed 's/^/  | /' >&2
    exit "$status"
  fi
}

step_run() {  # step_run NAME SIGNATURE COMMAND...: run with output to logs/NAME.log, then write the marker
  local name=$1 sig=$2
  shift 2
  if [[ -n $DRY_RUN ]]; then
    echo "would run $name: $*"
    return 0
  fi
  mkdir -p "$MARKERS"
  echo "$sig" >"$MARKERS/$name.started"
  local started=$SECONDS
  run_logged "$name" "$@"
  {
    printf '%s\nseconds %d\n' "$sig" $((SECONDS - started))
    local path
    for path in "${STEP_OUTPUTS[@]}"; do printf 'output %s\n' "${path#"$OUT"/}"; done
  } >"$MARKERS/$name.done"
  rm -f "$MARKERS/$name.started"
  echo "done $name ($((SECONDS - started)) s)"
  RAN=$((RAN + 1))
}

run_step() {  # run_step NAME COMMAND...
  local name=$1 sig
  shift
  sig=$(signature "$@")
  step_done "$name" "$sig" || step_run "$name" "$sig" "$@"
}

calibration_tag() { local tag=${1//+/-}; echo "${tag//[:,]/_}"; }
seed_suffix() { ((10#$1 == 0)) || echo "_seed$1"; }  # seed 0 keeps the plain names

evaluate() {  # evaluate NAME MODEL OUTPUT_JSON
  local limit_args=() token_args=()
  ((${#LIMITS[@]} == 0)) || limit_args=(--limit "${LIMITS[@]}")
  ((${#NLL_LIMITS[@]} == 0)) || limit_args+=(--nll_limit "${NLL_LIMITS[@]}")
  ((${#NEW_TOKENS[@]} == 0)) || token_args=(--max_new_tokens "${NEW_TOKENS[@]}")
  STEP_OUTPUTS=("$3")
  run_step "$1" "$PYTHON" "$REPO/scripts/eval_tasks.py" --model "$2" --tasks "${TASKS[@]}" "${DATA_ARGS[@]}" \
    --seqlen "$EVAL_SEQLEN" ${EVAL_WINDOWS:+--eval_windows "$EVAL_WINDOWS"} "${limit_args[@]}" "${token_args[@]}" \
    --batch_size "$EVAL_BATCH_SIZE" --dtype "$EVAL_DTYPE" --seed "$SEED" --output "$3" "${EVAL_EXTRA[@]}"
}

prune() {  # prune CALIBRATION SEED: one pruned model per calibration data set and seed, then its evaluation
  local tag dir
  tag=$(calibration_tag "$1")$(seed_suffix "$2")
  dir=$OUT/pruned/$tag
  STEP_OUTPUTS=("$dir/results/results.json" "$dir/model/config.json")
  run_step "prune_$tag" "$PYTHON" "$REPO/main_block_three_tier.py" --model "$MODEL" "${DATA_ARGS[@]}" \
    --calibration_dataset "$1" --nsamples "$NSAMPLES" --seqlen "$SEQLEN" --sparsity_ratios "${RATIOS[@]}" \
    --seed "$2" --no_eval --save "$dir/results" --save_model "$dir/model" "${PRUNE_EXTRA[@]}"
  evaluate "eval_pruned_$tag" "$dir/model" "$dir/eval.json"
}

latest_checkpoint() {  # the highest checkpoint-N under $1 whose trainer_state.json (written last) exists
  local best="" best_step=-1 path step
  for path in "$1"/checkpoint-*/trainer_state.json; do
    [[ -f $path ]] || continue
    path=${path%/trainer_state.json}
    step=${path##*checkpoint-}
    [[ $step =~ ^[0-9]+$ ]] && ((step > best_step)) && best=$path best_step=$step
  done
  echo "$best"
}

finetune() {  # finetune EXP SEED
  local suffix exp data=${FINETUNE[$1]} tag dir name sig resume checkpoint
  suffix=$(seed_suffix "$2")
  exp=$1$suffix name=ft_$1$suffix
  tag=$(calibration_tag "${CALIBRATION[$1]}")$suffix
  dir=$OUT/$exp/model
  local task_args=(--max_length "$FT_MAX_LENGTH") script=finetune_$data
  if [[ $data == wikitext2 ]]; then
    task_args=(--dataset_name wikitext2 --block_size "$FT_BLOCK_SIZE")
    script=finetune_lm
  fi
  local command=("${LAUNCHER[@]}" "$REPO/dense_ft/$script.py" --model_name_or_path "$OUT/pruned/$tag/model"
    "${DATA_ARGS[@]}" --output_dir "$dir" "${task_args[@]}" --num_train_epochs "$FT_EPOCHS" --max_steps "$FT_MAX_STEPS"
    --learning_rate "$FT_LR" --per_device_train_batch_size "$FT_BATCH_SIZE" --gradient_accumulation_steps "$FT_GRAD_ACCUM"
    ${FT_MAX_TRAIN_SAMPLES:+--max_train_samples "$FT_MAX_TRAIN_SAMPLES"} --max_eval_samples "$FT_EVAL_SAMPLES"
    --save_strategy steps --save_steps "$FT_SAVE_STEPS" --save_total_limit "$FT_SAVE_TOTAL_LIMIT" --logging_steps "$FT_LOGGING_STEPS"
    --seed "$2" --report_to none --disable_tqdm true)
  [[ $FT_BF16 != 1 ]] || command+=(--bf16)
  command+=("${FT_EXTRA[@]}")
  sig=$(signature "${command[@]}")
  STEP_OUTPUTS=("$dir/config.json" "$dir/finetune_results.json")
  if ! step_done "$name" "$sig"; then
    resume=()
    checkpoint=$(latest_checkpoint "$dir")
    if [[ -n $checkpoint ]]; then
      [[ ! -f $MARKERS/$name.started || $(head -n 1 "$MARKERS/$name.started") == "$sig" ]] ||
        die "$checkpoint comes from an interrupted $name with other settings ($MARKERS/$name.started); delete $dir to start it again"
      echo "resume $name from the latest complete checkpoint in $dir"
      resume=(--resume_from_checkpoint latest)
    fi
    step_run "$name" "$sig" "${command[@]}" "${resume[@]}"
    [[ $KEEP_CHECKPOINTS == 1 || -n $DRY_RUN ]] || rm -rf "$dir"/checkpoint-*
  fi
  evaluate "eval_$exp" "$dir" "$OUT/$exp/eval.json"
}

# ------------------------------------------------------------------ the matrix

echo "experiments: ${SELECTED[*]}; seeds ${SEED_LIST[*]} (fine-tuned: ${FT_SEED_LIST[*]}); model $MODEL; OUT $OUT${PRESET:+; preset $PRESET}"
evaluate eval_dense "$MODEL" "$OUT/dense/eval.json"
declare -A PRUNED=()
EXPECTED=(dense)  # the rows results.md must show, with or without data
for exp in "${SELECTED[@]}"; do
  calibration=${CALIBRATION[$exp]}
  for seed in "${SEED_LIST[@]}"; do
    if [[ ! -v "PRUNED[$calibration $seed]" ]]; then
      prune "$calibration" "$seed"
      PRUNED[$calibration $seed]=1
      EXPECTED+=("pruned/$(calibration_tag "$calibration")$(seed_suffix "$seed")")
    fi
    if [[ " ${FT_SEED_LIST[*]} " == *" $seed "* ]]; then
      finetune "$exp" "$seed"
      EXPECTED+=("$exp$(seed_suffix "$seed")")
    fi
  done
done

[[ -z $DRY_RUN ]] || exit 0
if [[ -f $OUT/results.md && -f $OUT/results.png &&
      -z $(find "$MARKERS" -name '*.done' -newer "$OUT/results.md" -print -quit) ]]; then
  echo "skip summary: $OUT/results.md is newer than every step"
else
  run_logged summary "$PYTHON" "$REPO/scripts/summarize_experiments.py" --out "$OUT" --expect "${EXPECTED[@]}"
fi
echo "finished: $RAN step(s) run; table $OUT/results.md, plot $OUT/results.png"
