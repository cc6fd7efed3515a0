#!/usr/bin/env python
"""Evaluation speed: our scorer against lm-evaluation-harness 0.4.13, our generation against transformers'
`generate`, and perplexity against its floor, in one run on the same rows.

- Multiple choice, per task (default: the eight compared with lm-eval), the first --limit rows of --data_dir:
  our scorer (lib.eval.multiple_choice, in this process) then lm-eval, run by --lm_eval_python (a Python
  with lm-eval 0.4.13) as `scripts/compare_lm_eval.py lm-eval`: lm-eval's own task YAMLs re-pointed at the
  same local rows, the same model files, batch --batch_size. Timed: our scoring call; lm-eval's
  `loglikelihood` calls (tokenizing and forwards, not loading or building the task). `disagreements`
  counts rows where any of the task's compared metrics (acc, acc_norm) differs.
- Generation (--generation_tasks, default squad gsm8k), the first --generation_limit prompts: our greedy
  loop (lib.eval.generation.generate_greedy) then `generate` on the same batches (reference_generate);
  `same_outputs` says whether every output is equal.
- Perplexity: --eval_windows windows of --seqlen WikiText-2 test tokens against the floor of
  scripts/bench_prune.py (one bare forward over the same windows, measured right before).

Each row is printed as it is measured; --json OUT gets {"rows": [{"task", "n", "ours_s", "lm_eval_s",
"ratio", "disagreements"}], "total": {"ours_s", "lm_eval_s", "ratio"}, "generation": [{"task", "n",
"ours_s", "generate_s", "ratio", "same_outputs"}], "perplexity": {"task", "n_windows", "seqlen", "ours_s",
"floor_s", "ratio", "cpu_ratio"}, "settings"}, rewritten atomically after every row. Ratios are ours / theirs.

    python scripts/bench_eval.py --data_dir DATA --lm_eval_python PY --json out/bench_eval.json
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch

from lib.core.cli import OneLineParser, check_range, fail, interrupts_end_in_one_line, setup_logging
from lib.core.outputs import Output, claim_outputs
from lib.core.writes import write_output_json
from lib.data import load_task_examples
from lib.eval.batching import DEFAULT_BATCH_TOKENS
from lib.eval.generation import generate_greedy, reference_generate
from lib.eval.perplexity import perplexity, perplexity_tokens
from lib.eval.tasks.task import get, names
from lib.models.loading import DEFAULT_MODEL, load_model, resolve_model_path, run_inputs
from scripts.bench_prune import Clock, bare_forwards
from scripts.compare_lm_eval import compared_tasks, disagreements, score_ours

REPO = Path(__file__).resolve().parent.parent
logger = logging.getLogger("bench_eval")


def ratio(ours: float, theirs: float) -> float | None:
    return ours / theirs if theirs > 0 else None


def run_lm_eval_side(args, model_dir: str, task: str, n: int, workdir: Path) -> dict:
    """`compare_lm_eval.py lm-eval` on one task in --lm_eval_python: its {"n", "per_example", "seconds", ...}."""
    output = workdir / f"{task}.json"
    command = [args.lm_eval_python, str(REPO / "scripts" / "compare_lm_eval.py"), "lm-eval", "--model", model_dir,
               "--data_dir", str(args.data_dir), "--tasks", task, "--limit", str(n), "--batch_size",
               str(args.batch_size), "--output", str(output)]
    threads = str(args.threads)
    env = {**os.environ, "OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads,
           "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    if done.returncode != 0 or not output.is_file():
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise RuntimeError(f"the lm-eval side of {task} failed (exit {done.returncode}): {last}")
    return json.loads(output.read_text())["tasks"][task]


def multiple_choice_row(args, model, tokenizer, model_dir: str, task: str, workdir: Path) -> dict:
    examples = load_task_examples(get(task).dataset, "eval", args.data_dir, args.limit)
    ours = score_ours(model, tokenizer, task, examples, args.batch_tokens)
    reference = run_lm_eval_side(args, model_dir, task, len(examples), workdir)
    if reference["n"] != ours["n"]:
        raise RuntimeError(f"{task}: lm-eval scored {reference['n']} rows, ours {ours['n']}")
    return {"task": task, "n": ours["n"], "ours_s": ours["seconds"], "lm_eval_s": reference["seconds"],
            "ratio": ratio(ours["seconds"], reference["seconds"]),
            "disagreements": disagreements(reference, ours, compared_tasks()[task].metrics)}


def generation_row(args, model, tokenizer, task_name: str) -> dict:
    task = get(task_name)
    examples = load_task_examples(task.dataset, "eval", args.data_dir, args.generation_limit)
    prompts = [task.prompt(example) for example in examples]
    timings, outputs = {}, {}
    for side, function in (("ours", generate_greedy), ("generate", reference_generate)):
        kwargs = {"progress": False} if side == "ours" else {}
        start = time.perf_counter()
        outputs[side] = function(model, tokenizer, prompts, task.max_new_tokens, task.stop, batch_size=args.batch_size,
                                 **kwargs)
        timings[side] = time.perf_counter() - start
    return {"task": task_name, "n": len(prompts), "ours_s": timings["ours"], "generate_s": timings["generate"],
            "ratio": ratio(timings["ours"], timings["generate"]), "same_outputs": outputs["ours"] == outputs["generate"]}


def perplexity_row(args, model, tokenizer) -> dict:
    input_ids, n_windows = perplexity_tokens(tokenizer, "wikitext2", args.seqlen, args.data_dir, args.eval_windows)
    windows = input_ids[0, : n_windows * args.seqlen].view(n_windows, args.seqlen)  # (N, T)
    floor = bare_forwards(model, list(windows.split(args.ppl_batch_size)), passes=1)
    with Clock() as clock:
        perplexity(model, input_ids, args.seqlen, n_windows, args.ppl_batch_size, progress=False)
    return {"task": "wikitext2", "n_windows": n_windows, "seqlen": args.seqlen, "ours_s": clock.wall,
            "floor_s": floor.wall, "ratio": ratio(clock.wall, floor.wall), "cpu_ratio": ratio(clock.cpu, floor.cpu)}


def total(rows: list[dict]) -> dict:
    ours, theirs = sum(row["ours_s"] for row in rows), sum(row["lm_eval_s"] for row in rows)
    return {"ours_s": ours, "lm_eval_s": theirs, "ratio": ratio(ours, theirs)}


def show(value) -> str:
    return f"{value:.2f}" if isinstance(value, float) else str(value)


def main(argv: list[str] | None = None) -> int:
    parser = OneLineParser(description=__doc__)
    parser.add_argument("--model", default=DEFAULT_MODEL, help="anything lm-eval's HFLM also loads once resolved to a "
                        "directory (an alias or .gguf is converted first)")
    parser.add_argument("--data_dir", required=True, help="DATA: the local rows both sides read")
    parser.add_argument("--lm_eval_python", required=True, metavar="PY", help="a Python with lm-eval 0.4.13")
    parser.add_argument("--tasks", nargs="+", default=list(compared_tasks()), choices=list(compared_tasks()))
    parser.add_argument("--limit", type=int, default=200, help="rows per multiple-choice task (default 200)")
    parser.add_argument("--batch_size", type=int, default=16, help="lm-eval's batch size; prompts per generation batch")
    parser.add_argument("--batch_tokens", type=int, default=DEFAULT_BATCH_TOKENS, help="our padded tokens per scoring forward")
    parser.add_argument("--threads", type=int, default=2, help="torch threads of both sides (default 2)")
    parser.add_argument("--generation_tasks", nargs="*", default=list(names("generate")), choices=list(names("generate")),
                        help="generating tasks timed against generate (none: skip)")
    parser.add_argument("--generation_limit", type=int, default=50, help="prompts per generating task (default 50)")
    parser.add_argument("--seqlen", type=int, default=512, help="perplexity window (default 512)")
    parser.add_argument("--eval_windows", type=int, default=16, help="perplexity windows; 0 skips the row (default 16)")
    parser.add_argument("--ppl_batch_size", type=int, default=8, help="perplexity windows per forward (default 8)")
    parser.add_argument("--json", default=None, metavar="OUT", help="write the rows here (atomically, after every row)")
    parser.add_argument("--overwrite", action="store_true",
                        help="let --json replace an existing file this toolkit did not write (default: refuse)")
    args = parser.parse_args(argv)
    try:
        for flag in ("limit", "batch_size", "batch_tokens", "threads", "generation_limit", "ppl_batch_size"):
            check_range(f"--{flag}", getattr(args, flag), 1)
        check_range("--seqlen", args.seqlen, 2)
        check_range("--eval_windows", args.eval_windows, 0)
        if not (Path(args.lm_eval_python).is_file() and os.access(args.lm_eval_python, os.X_OK)):
            raise ValueError(f"--lm_eval_python {args.lm_eval_python} is not an executable file; "
                             "pass the python of a virtual environment with lm-eval 0.4.13")
        if not Path(args.data_dir).is_dir():
            raise ValueError(f"--data_dir {args.data_dir} is not a directory")
    except ValueError as err:
        fail(err)
    setup_logging(logging.WARNING)
    torch.set_num_threads(args.threads)
    output = Output("--json", args.json, "bench_eval", is_file=True)
    report: dict = {"settings": {k: v for k, v in vars(args).items() if k not in ("json", "overwrite")},
                    "rows": [], "total": total([]), "generation": [], "perplexity": None}

    def save() -> None:
        if args.json:
            write_output_json(args.json, report, output.kind, args.overwrite, flag="--json")

    try:
        with claim_outputs([output] if args.json else [], run_inputs(args.model, data_dir=args.data_dir),
                           overwrite=args.overwrite), tempfile.TemporaryDirectory() as workdir:
            model_dir = resolve_model_path(args.model)
            model, tokenizer = load_model(model_dir, dtype="float32", device="cpu")
            print(f"{args.model}: {torch.get_num_threads()} threads, {args.limit} rows per task", flush=True)
            print(f"{'task':<16}{'n':>5}{'ours s':>9}{'lm-eval s':>11}{'ratio':>7}  disagreements", flush=True)
            for task in args.tasks:
                row = multiple_choice_row(args, model, tokenizer, model_dir, task, Path(workdir))
                report["rows"].append(row)
                report["total"] = total(report["rows"])
                print(f"{task:<16}{row['n']:>5}{row['ours_s']:>9.1f}{row['lm_eval_s']:>11.1f}{show(row['ratio']):>7}  "
                      f"{row['disagreements']}", flush=True)
                save()
            if report["rows"]:
                t = report["total"]
                print(f"{'total':<16}{'':>5}{t['ours_s']:>9.1f}{t['lm_eval_s']:>11.1f}{show(t['ratio']):>7}", flush=True)
            for task in args.generation_tasks:
                row = generation_row(args, model, tokenizer, task)
                report["generation"].append(row)
                print(f"generate {task}: {row['n']} prompts, ours {row['ours_s']:.1f} s, generate {row['generate_s']:.1f} s, "
                      f"ratio {show(row['ratio'])}, same outputs: {row['same_outputs']}", flush=True)
                save()
            if args.eval_windows:
                row = perplexity_row(args, model, tokenizer)
                report["perplexity"] = row
                print(f"perplexity: {row['n_windows']} x {row['seqlen']}, {row['ours_s']:.1f} s against a "
                      f"{row['floor_s']:.1f} s floor, ratio {show(row['ratio'])} (CPU {show(row['cpu_ratio'])})", flush=True)
                save()
    except (ValueError, RuntimeError, FileNotFoundError) as err:  # OutputError, DataError, ModelLoadError, a failed side
        fail(err)
    return 0


if __name__ == "__main__":
    with interrupts_end_in_one_line():
        sys.exit(main())
