#!/usr/bin/env python
"""Check the zero-shot suite against lm-evaluation-harness 0.4 on the same local rows.

Three steps; the first runs in a separate virtual environment holding lm-eval (it is not a
dependency of this toolkit), the others in the project's:

    python3 -m venv /work/lmeval-venv
    /work/lmeval-venv/bin/pip install torch==2.13.0 "lm-eval[hf]==0.4.13" transformers==5.24.0
    # 1. lm-eval's own tasks, re-pointed at DIR/<task>/validation.jsonl (dataset_path json)
    /work/lmeval-venv/bin/python scripts/compare_lm_eval.py lm-eval --model MODEL_DIR \\
        --data_dir DATA --limit boolq=1000 hellaswag=1000 --output out/parity/lm_eval.json
    # 2. ours on the same rows
    python scripts/compare_lm_eval.py ours --model MODEL_DIR --data_dir DATA \\
        --limit boolq=1000 hellaswag=1000 --output out/parity/ours.json
    # 3. the table; exit status 1 when a task differs by more than --tolerance (default 1 point)
    python scripts/compare_lm_eval.py compare out/parity/lm_eval.json out/parity/ours.json

Step 1 writes, per task, a YAML that `include`s lm-eval's installed task file and overrides
only the data source (`dataset_path: json`, `data_files` = the local file, no test split), so
the prompts, choices and metrics are lm-eval's own. Both sides run the HF model on the CPU in
float32, zero-shot, the first N rows of each file (`--limit`, per task or one number).
Per-example acc/acc_norm are compared too: the table counts rows where the two disagree. Each side's
JSON records per task the seconds its scoring took (lm-eval: the `loglikelihood` calls;
scripts/bench_eval.py reads them).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from lib.core.cli import interrupts_end_in_one_line  # noqa: E402 (both import in lm-eval's venv)
from lib.core.outputs import Output, claim_outputs  # noqa: E402
from lib.core.writes import write_output_json
from lib.data import registry
from lib.eval.batching import DEFAULT_BATCH_TOKENS
from lib.eval.tasks.task import get, names
from lib.models.loading import run_inputs

logger = logging.getLogger("compare_lm_eval")


def compared_tasks() -> dict:
    """{our task: its lib.eval.tasks.task.LmEval} of every registered task whose lm-eval YAML is known (the
    multiple-choice ones), in registration order: the table both sides and the comparison read."""
    return {name: get(name).lm_eval for name in names() if get(name).lm_eval and get(name).lm_eval.yaml}


def local_file(task: str) -> str:
    """The task's evaluation file under --data_dir, as the data registry names it ("boolq/dev.jsonl")."""
    spec = registry.get(get(task).dataset)
    return f"{spec.name}/{spec.files['eval'][0]}"


def parse_limits(values: list[str] | None, tasks: list[str]) -> dict[str, int | None]:
    """`["1000"]` -> every task 1000; `["boolq=1000", "hellaswag=500"]` -> those, the rest None (all rows)."""
    limits: dict[str, int | None] = dict.fromkeys(tasks)
    for item in values or []:
        task, sep, number = item.rpartition("=")
        if not sep:
            limits = dict.fromkeys(tasks, int(number))
        elif task not in limits:
            raise ValueError(f"--limit {item!r}: {task} is not one of {', '.join(tasks)}")
        else:
            limits[task] = int(number)
    return limits


@contextlib.contextmanager
def timed_loglikelihood(lm) -> Iterator[dict]:
    """Time the scoring calls of an lm-eval model (tokenizing and the forwards, not building the task):
    {"seconds": wall seconds spent in lm.loglikelihood}, filled in as the calls return."""
    clock, original = {"seconds": 0.0}, lm.loglikelihood

    def loglikelihood(*args, **kwargs):
        start = time.perf_counter()
        try:
            return original(*args, **kwargs)
        finally:
            clock["seconds"] += time.perf_counter() - start

    lm.loglikelihood = loglikelihood
    try:
        yield clock
    finally:
        del lm.loglikelihood  # the class's method again


def run_lm_eval(args: argparse.Namespace, limits: dict[str, int | None], save) -> dict:
    """lm-eval's tasks on the local files; returns {task: {"metrics", "n", "per_example"}}."""
    import lm_eval
    from lm_eval import simple_evaluate
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    tasks_root = Path(lm_eval.__file__).parent / "tasks"
    lm = HFLM(pretrained=args.model, device="cpu", dtype="float32", batch_size=args.batch_size)
    data_dir = Path(args.data_dir).resolve()
    report, lm_tasks = {}, compared_tasks()
    with tempfile.TemporaryDirectory() as yaml_dir:
        for task in limits:
            name = f"local_{lm_tasks[task].task}"
            (Path(yaml_dir) / f"{name}.yaml").write_text(
                f"include: {tasks_root / lm_tasks[task].yaml}\ntask: {name}\ntag: []\ndataset_path: json\n"
                f"dataset_name: null\ndataset_kwargs:\n  data_files:\n    validation: {data_dir / local_file(task)}\n"
                "training_split: null\nvalidation_split: validation\ntest_split: null\n" + lm_tasks[task].overrides
            )
        manager = TaskManager(include_path=yaml_dir)
        for task, limit in limits.items():
            name = f"local_{lm_tasks[task].task}"
            logger.info("lm-eval %s (limit %s)", name, limit)
            with timed_loglikelihood(lm) as clock:
                out = simple_evaluate(model=lm, tasks=[name], num_fewshot=0, limit=limit, task_manager=manager,
                                      log_samples=True, bootstrap_iters=0)
            results = out["results"][name]
            samples = sorted(out["samples"][name], key=lambda s: s["doc_id"])
            report[task] = {
                "metrics": {m: results[f"{m},none"] for m in ("acc", "acc_norm") if f"{m},none" in results},
                "n": len(samples),
                "per_example": [{m: s[m] for m in ("acc", "acc_norm") if m in s} for s in samples],
                "seconds": clock["seconds"],
            }
            save(report)
    return report


def run_ours(args: argparse.Namespace, limits: dict[str, int | None], save) -> dict:
    """lib.eval.multiple_choice on the same rows."""
    from lib.data import load_task_examples
    from lib.models.loading import load_model

    model, tokenizer = load_model(args.model, dtype="float32", device="cpu", kernel=args.kernel)
    report = {}
    for task, limit in limits.items():
        logger.info("ours %s (limit %s)", task, limit)
        examples = load_task_examples(get(task).dataset, "eval", args.data_dir, limit)
        report[task] = score_ours(model, tokenizer, task, examples, args.batch_tokens)
        save(report)
    return report


def score_ours(model, tokenizer, task: str, examples: list[dict], batch_tokens: int) -> dict:
    """lib.eval.multiple_choice on `examples`: {"metrics", "n", "per_example", "seconds" (the scoring, wall)}."""
    from lib.eval.multiple_choice import evaluate_multiple_choice

    start = time.perf_counter()
    result = evaluate_multiple_choice(model, tokenizer, get(task), examples, batch_tokens, progress=False)
    return {"metrics": result["metrics"], "n": result["counts"]["total"], "seconds": time.perf_counter() - start,
            "per_example": [{m: s[m] for m in ("acc", "acc_norm")} for s in result["samples"]]}


def disagreements(reference: dict, ours: dict, metrics: Sequence[str]) -> int:
    """Rows of one task where the two sides' per-example values of any of `metrics` differ."""
    return sum(any(a[m] != b[m] for m in metrics) for a, b in zip(reference["per_example"], ours["per_example"]))


def compare(reference: dict, ours: dict, tolerance: float) -> tuple[str, bool]:
    """A markdown table of both sides' acc / acc_norm in percent; ok = every difference <= tolerance points."""
    lines = ["| task | rows | metric | lm-eval | ours | diff (points) | rows that disagree |", "|---|---|---|---|---|---|---|"]
    ok, lm_tasks = True, compared_tasks()
    for task in [t for t in reference if t in ours]:  # a run cut short compares what both sides finished
        ref, mine = reference[task], ours[task]
        if ref["n"] != mine["n"]:
            raise ValueError(f"{task}: lm-eval scored {ref['n']} rows, ours {mine['n']}; use the same --limit")
        for metric in lm_tasks[task].metrics:
            diff = 100 * (mine["metrics"][metric] - ref["metrics"][metric])
            disagree = disagreements(ref, mine, (metric,))
            ok &= abs(diff) <= tolerance
            lines.append(f"| {task} | {ref['n']} | {metric} | {100 * ref['metrics'][metric]:.2f} | "
                         f"{100 * mine['metrics'][metric]:.2f} | {diff:+.2f} | {disagree} |")
    return "\n".join(lines), ok


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="side", required=True)
    for side in ("lm-eval", "ours"):
        p = sub.add_parser(side)
        p.add_argument("--model", required=True, help="HF model directory (both sides load the same files)")
        p.add_argument("--data_dir", required=True, help="folder with <task>/validation.jsonl (boolq/dev.jsonl)")
        p.add_argument("--tasks", nargs="+", default=list(compared_tasks()), choices=list(compared_tasks()))
        p.add_argument("--limit", nargs="+", default=None, metavar="N|TASK=N", help="first N rows (default: all)")
        p.add_argument("--batch_size", type=int, default=16, help="lm-eval's batch size (rows)")
        p.add_argument("--batch_tokens", type=int, default=DEFAULT_BATCH_TOKENS,
                       help="ours: padded tokens per forward (lib.eval.batching)")
        p.add_argument("--output", required=True, help="JSON file for this side's results (replaces only an earlier one)")
        p.add_argument("--overwrite", action="store_true", help="let --output replace a file this toolkit did not write")
        if side == "ours":
            from lib.models.loading import add_kernel_flag

            add_kernel_flag(p)
    p = sub.add_parser("compare")
    p.add_argument("reference", help="the lm-eval side's JSON")
    p.add_argument("ours", help="our side's JSON")
    p.add_argument("--tolerance", type=float, default=1.0, help="largest allowed |difference| in points")
    args = parser.parse_args(argv)
    try:
        with interrupts_end_in_one_line():  # Ctrl-C / SIGTERM: one line, nothing half-written
            if args.side == "compare":
                table, ok = compare(json.loads(Path(args.reference).read_text())["tasks"], json.loads(Path(args.ours).read_text())["tasks"],
                                    args.tolerance)
                sys.stdout.write(table + "\n")
                return 0 if ok else 1
            limits = parse_limits(args.limit, args.tasks)
            if args.side == "ours":
                from lib.models.loading import check_kernel

                check_kernel(args.kernel, args.model, "cpu")
            output = Output("--output", args.output, "lm_eval_parity", is_file=True)
            with claim_outputs([output], run_inputs(args.model, data_dir=args.data_dir), overwrite=args.overwrite):
                def save(report: dict) -> None:  # after every task, so a long run keeps what it finished
                    write_output_json(args.output, {"side": args.side, "model": args.model, "limits": limits, "tasks": report},
                                      output.kind, args.overwrite)

                (run_lm_eval if args.side == "lm-eval" else run_ours)(args, limits, save)
            logger.info("wrote %s", args.output)
    except (ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
