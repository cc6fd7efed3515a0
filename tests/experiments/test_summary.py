"""The experiment summary (lib/experiments/summary.py, rows.py) from hand-written eval reports that describe their
metrics in `tasks_info` (the schema of RESTRUCTURE.md that scripts/eval_tasks.py writes): tables, paired intervals,
verdicts, seeds; a report without tasks_info."""

import json
import math
import shutil
from pathlib import Path

import pytest

from lib.core.results import write_json
from lib.experiments.rows import load_rows, recorded_flags
from lib.experiments.summary import results_markdown, verdict


ALTERNATE = [0.5, -0.5] * 4  # window NLL offsets with mean 0


def metric(display: str, role: str = "score", fmt: str = "pct", higher_is_better: bool = True) -> dict:
    return {"display": display, "higher_is_better": higher_is_better, "format": fmt, "role": role}


NLL = {"fmt": "nll", "higher_is_better": False}
TASKS_INFO = {
    "wikitext2": {"display": "WikiText2", "output_type": "perplexity", "metrics": {
        "ppl": metric("WikiText2 PPL", fmt="ppl", higher_is_better=False),
        "nll": metric("WikiText2 NLL", "detail", **NLL)}},
    "squad": {"display": "SQuAD", "output_type": "generate", "metrics": {
        "exact": metric("SQuAD EM"), "f1": metric("SQuAD F1"), "answer_nll": metric("SQuAD NLL", **NLL),
        "HasAns_f1": metric("SQuAD F1 answerable", "behaviour"), "NoAns_exact": metric("SQuAD EM unanswerable", "behaviour"),
        "no_answer_rate": metric("SQuAD no-answer rate", "behaviour"),
        "HasAns_answer_nll": metric("SQuAD NLL answerable", "behaviour", **NLL),
        "NoAns_answer_nll": metric("SQuAD NLL unanswerable", "behaviour", **NLL)}},
    "gsm8k": {"display": "GSM8K", "output_type": "generate", "metrics": {
        "strict_accuracy": metric("GSM8K acc (strict)"), "flexible_accuracy": metric("GSM8K acc (flex)"),
        "answer_nll": metric("GSM8K NLL", **NLL)}},
    "boolq": {"display": "BoolQ", "output_type": "multiple_choice", "metrics": {
        "acc": metric("BoolQ acc"), "yes_rate": metric("BoolQ yes rate", "behaviour"),
        "majority_rate": metric("BoolQ majority rate", "detail")}},
}


def eval_report(ppl: float, per_example: dict[str, dict[str, list[float]]], limit: int = 32) -> dict:
    """The key layout of scripts/eval_tasks.py (lib/eval/runner.py): metrics are the means of the per-example lists
    (ids "0", "1", ...), perplexity exp(mean) of log(ppl) + ALTERNATE window NLLs, fractions in [0, 1]."""
    per_example = {"wikitext2": {"nll": [math.log(ppl) + d for d in ALTERNATE]}, **per_example}
    per_example["squad"]["answer_tokens"] = [3.0] * len(per_example["squad"]["answer_nll"])
    metrics = {task: {key: sum(v) / len(v) for key, v in values.items() if key != "answer_tokens"}
               for task, values in per_example.items()}
    metrics["wikitext2"] = {"ppl": ppl, "nll": math.log(ppl)}
    metrics["squad"].update(HasAns_f1=metrics["squad"]["f1"] / 2, NoAns_exact=1.0, no_answer_rate=0.5)
    metrics["boolq"].update(majority_rate=0.625, yes_rate=0.5)
    return {
        "model": "m", "tasks": ["wikitext2", "squad", "gsm8k", "boolq"], "metrics": metrics,
        "per_example": {task: {key: {str(i): v for i, v in enumerate(values)} for key, values in task_values.items()}
                        for task, task_values in per_example.items()},
        "counts": {"wikitext2": {"n_windows": 8, "n_tokens": 2040, "seqlen": 256}, "squad": {"total": 32},
                   "gsm8k": {"total": 16}, "boolq": {"total": 64}},
        "settings": {"limit": {"squad": limit}, "seqlen": 256, "eval_windows": 8, "max_new_tokens": None},
        "tasks_info": TASKS_INFO,
    }


def hits(n: int, right: range | list[int]) -> list[float]:
    return [float(i in right) for i in range(n)]


def report_values(exact, f1, flexible, boolq, squad_nll, gsm8k_nll) -> dict:
    return {"squad": {"exact": exact, "f1": f1, "answer_nll": squad_nll},
            "gsm8k": {"strict_accuracy": [0.0] * 16, "flexible_accuracy": flexible, "answer_nll": gsm8k_nll},
            "boolq": {"acc": boolq}}


DENSE = report_values(hits(32, range(8)), [0.3] * 32, hits(16, [0]), hits(64, range(20)), [4.0] * 32, [1.4] * 16)
PRUNED = report_values([0.0] * 32, [0.1] * 32, [0.0] * 16, hits(64, range(32)),
                       [6.5 + d for d in [0.3, -0.3] * 16], [3.5 + d for d in [0.2, -0.2] * 8])

# exp5 - pruned: EM +4 of 32 (+12.5), F1 +0.25 on every example, BoolQ 6 right -> wrong and 2 wrong -> right
# (-6.25: inside the noise), SQuAD NLL -4.25 on every example, GSM8K NLL +0.25 on average but +-3 per example
EXP5 = report_values(hits(32, range(4)), [0.35] * 32, [0.0] * 16, hits(64, [*range(6, 32), 32, 33]),
                     [2.25 + d for d in [0.3, -0.3] * 16], [3.75 + d for d in [-1.5, 1.5] * 8])


def write_matrix_reports(out: Path, seed_suffix: str = "", shift: float = 0.0) -> None:
    """dense, pruned/wikitext2-squad and exp5 (fine-tuned on SQuAD from it) as the script lays them out."""
    tag = "wikitext2-squad" + seed_suffix
    write_json(out / "dense" / "eval.json", eval_report(40.0, DENSE))
    write_json(out / "pruned" / tag / "eval.json", eval_report(700.0 + shift, PRUNED))
    write_json(out / "pruned" / tag / "results" / "results.json",
               {"args": {"calibration_dataset": "wikitext2+squad"}, "sparsity": {"sparsity": 0.41333}})
    write_json(out / f"exp5{seed_suffix}" / "eval.json", eval_report(650.0 + shift, EXP5))
    write_json(out / f"exp5{seed_suffix}" / "model" / "finetune_results.json",
               {"task": "squad", "data_args": {"data_dir": "d"}, "model_name_or_path": f"{out}/pruned/{tag}/model"})
    write_json(out / f"exp5{seed_suffix}" / "model" / "sparsity.json", {"end": {"sparsity": 0.41333}})


def test_summary_from_hand_written_reports(tmp_path):
    """Rows, labels, percentages, the fine-tuned minus before-fine-tuning differences and their marks, by hand."""
    out = tmp_path
    write_matrix_reports(out)
    write_json(out / "exp5" / "model" / "checkpoint-4" / "eval.json", {})  # never a row: inside a model dir
    rows = load_rows(out)
    assert [row.name for row in rows] == ["dense", "pruned/wikitext2-squad", "exp5"]
    assert rows[2].reference == "pruned/wikitext2-squad" and rows[2].calibration == "wikitext2+squad"
    table = results_markdown(rows)
    assert "| Dense (no pruning, no FT) | none | none | not pruned | 40.00 | 25.0 | 30.0 | 0.0 | 6.2 | 31.2 | 4.000 | 1.400 |" in table
    assert "| Pruned WikiText2 + SQuAD, before FT | WikiText2 + SQuAD | none | 41.33% | 700.00 |" in table
    assert "| Exp 5 | WikiText2 + SQuAD | SQuAD | 41.33% | 650.00 | 12.5 | 35.0 |" in table
    assert "Seeds" not in table and "±" not in table  # one seed: plain values
    # exp5 - its pruned model, each with its 95% paired-bootstrap interval; * where it excludes 0. PPL: the same
    # window offsets on both sides, so every window gets better; F1 and SQuAD NLL move every example alike;
    # EM +12.5 from 4 of 32 examples (all moving up); BoolQ -6.25 from 6 down and 2 up of 64 (the interval covers 0);
    # GSM8K NLL +0.25 with per-example differences of +3.25 / -2.75 (covers 0); strict accuracy 0 everywhere.
    line = next(line for line in table.splitlines() if line.startswith("| Exp 5 | WikiText2 + SQuAD → SQuAD |"))
    cells = [cell.strip() for cell in line.strip("|").split("|")][2:]
    assert cells[0].startswith("-50.00 [-") and cells[0].endswith("] *")
    low, high = (float(x) for x in cells[0][cells[0].index("[") + 1:-3].split(","))
    assert low < -50 < high < 0  # the PPL level moves with the resampled windows, the sign does not
    assert cells[1].startswith("+12.5 [+") and cells[1].endswith("] *")
    assert cells[2] == "+25.0 [+25.0, +25.0] *"
    assert cells[3] == "+0.0 [+0.0, +0.0]" and cells[4] == "+0.0 [+0.0, +0.0]"  # no difference, no mark
    assert cells[5].startswith("-6.2 [-") and not cells[5].endswith("*")
    low, high = (float(x) for x in cells[5][cells[5].index("[") + 1:-1].split(","))
    assert low < 0 < high
    assert cells[6] == "-4.250 [-4.250, -4.250] *"
    assert cells[7].startswith("+0.250 [-") and not cells[7].endswith("*")
    assert ("- fine-tuning on SQuAD lowers the SQuAD answer NLL (Exp 5 − Pruned WikiText2 + SQuAD, before FT: "
            "-4.250 [-4.250, -4.250] *): **supported**") in table
    assert "SQuAD n = 32, GSM8K n = 16, BoolQ n = 64" in table and "majority-class rate on these examples: 62.5%" in table
    assert "| Exp 5 | 17.5 | 100.0 | 50.0 | 50.0 |" in table  # answer behaviour: HasAns F1, NoAns EM, rates
    assert "answerable SQuAD questions" not in table  # reports without the split NLL: no verdict line for it
    assert "Warning" not in table
    write_json(out / "exp5" / "eval.json", eval_report(650.0, EXP5, limit=200))
    assert "different settings (limit)" in results_markdown(load_rows(out))


def test_answerable_nll_gets_its_own_column_and_verdict(tmp_path):
    """SQuAD's answer NLL split by answerability: a behaviour column and a verdict from its paired interval."""
    write_matrix_reports(tmp_path)
    # the answerable questions are the even ids; exp5 - pruned is -2.0 / -1.5 alternately (mean -1.75)
    for name, values in (("pruned/wikitext2-squad", [7.0, 6.0] * 8), ("exp5", [5.0, 4.5] * 8)):
        path = tmp_path / name / "eval.json"
        report = json.loads(path.read_text())
        report["per_example"]["squad"]["HasAns_answer_nll"] = {str(2 * i): v for i, v in enumerate(values)}
        report["metrics"]["squad"]["HasAns_answer_nll"] = sum(values) / len(values)
        write_json(path, report)
    dense = json.loads((tmp_path / "dense" / "eval.json").read_text())
    dense["counts"]["squad"].update(total=16, answer_total=32)  # generation on fewer examples than the NLL
    write_json(tmp_path / "dense" / "eval.json", dense)
    table = results_markdown(load_rows(tmp_path))
    assert "| SQuAD NLL answerable ↓ |" in table
    assert "| Pruned WikiText2 + SQuAD, before FT | 5.0 | 100.0 | 50.0 | 6.500 | 50.0 |" in table
    assert "| Dense (no pruning, no FT) | 15.0 | 100.0 | 50.0 | — | 50.0 |" in table  # an older report: no split
    line = next(line for line in table.splitlines() if "answerable SQuAD questions" in line)
    assert line.startswith("- fine-tuning on SQuAD lowers the answer NLL of the answerable SQuAD questions "
                           "(Exp 5 − Pruned WikiText2 + SQuAD, before FT: -1.750 [-")
    low, high = (float(x) for x in line[line.index("[") + 1:line.index("]")].split(","))
    assert -2.0 <= low < -1.75 < high <= -1.5 and line.endswith("] *): **supported**")
    assert "SQuAD n = 16 (answer NLL: 32)" in table  # the counts of the first row


def test_summary_over_seeds(tmp_path):
    write_matrix_reports(tmp_path)
    write_matrix_reports(tmp_path, "_seed1", shift=100.0)  # the second seed: PPL 800 and 750
    rows = load_rows(tmp_path)
    assert [(row.name, row.base, row.seed) for row in rows] == [
        ("dense", "dense", 0), ("pruned/wikitext2-squad", "pruned/wikitext2-squad", 0),
        ("pruned/wikitext2-squad_seed1", "pruned/wikitext2-squad", 1), ("exp5", "exp5", 0), ("exp5_seed1", "exp5", 1)]
    table = results_markdown(rows)
    assert "| Sparsity | Seeds | WikiText2 PPL" in table
    # mean +- sd (ddof 1) over seeds: 650 and 750 -> 700.00 +- 70.71
    assert "| Exp 5 | WikiText2 + SQuAD | SQuAD | 41.33% | 0 1 | 700.00 ± 70.71 | 12.5 ± 0.0 |" in table
    assert "| Dense (no pruning, no FT) | none | none | not pruned | — | 40.00 |" in table
    assert "calibration seeds resampled per row" in table
    line = next(line for line in table.splitlines() if line.startswith("| Exp 5 | WikiText2 + SQuAD → SQuAD |"))
    ppl_cell = line.split("|")[3].strip()
    assert ppl_cell.startswith("-50.00 [") and not ppl_cell.endswith("*")  # the seed spread (+-100) covers -50


def test_fine_tuned_seed_is_compared_with_its_own_pruned_seed(tmp_path):
    write_matrix_reports(tmp_path)
    write_matrix_reports(tmp_path, "_seed1", shift=100.0)
    shutil.rmtree(tmp_path / "exp5_seed1")  # FT_SEEDS=0: pruned seeds 0 and 1, fine-tuned seed 0 only
    table = results_markdown(load_rows(tmp_path))
    assert "| Pruned WikiText2 + SQuAD, before FT | WikiText2 + SQuAD | none | 41.33% | 0 1 | 750.00 ± 70.71 |" in table
    line = next(line for line in table.splitlines() if line.startswith("| Exp 5 | WikiText2 + SQuAD → SQuAD |"))
    assert line.split("|")[3].strip().startswith("-50.00 [")  # 650 - 700 (seed 0), not 650 - 750 (both seeds)
    assert "fine-tuned rows: seed 0 only (FT_SEEDS)" in table


@pytest.mark.parametrize("result, sign, expected", [
    ({"difference": -1.0, "low": -1.5, "high": -0.5, "significant": True}, -1, "supported"),
    ({"difference": -1.0, "low": -1.5, "high": -0.5, "significant": True}, 1, "contradicted"),
    ({"difference": -1.0, "low": -2.5, "high": 0.5, "significant": False}, -1, "not established (the interval covers 0)"),
    ({"difference": -1.0, "low": None, "high": None, "significant": False}, -1, "not established (no per-example values)"),
    (None, -1, "not measured"),
])
def test_verdicts_come_from_the_interval(result, sign, expected):
    assert verdict(result, sign) == expected


def test_recorded_flags_take_only_their_own_values(tmp_path):
    marker = tmp_path / "markers" / "ft_exp1.done"
    marker.parent.mkdir()
    marker.write_text("python ft.py --learning_rate 2e-5 --bf16 --warmup_ratio 0.1 --max_steps -1 --sparsity_ratios 0.35 0.45 0.2 --seed 0\n")
    flags = ("--learning_rate", "--bf16", "--max_steps", "--sparsity_ratios")
    assert recorded_flags(tmp_path, "ft_", flags) == "--learning_rate 2e-5 --bf16 --max_steps -1 --sparsity_ratios 0.35 0.45 0.2"
    assert recorded_flags(tmp_path, "prune_", flags) is None


def rewrite_reports(out: Path, change) -> None:
    for path in out.rglob("eval.json"):
        report = json.loads(path.read_text())
        change(report)
        write_json(path, report)


def test_the_reports_tasks_info_decides_what_is_shown(tmp_path):
    """Headers, roles and formats come from tasks_info, nothing from a registry: rename, demote, add a task."""
    write_matrix_reports(tmp_path)

    def change(report):
        info = json.loads(json.dumps(report["tasks_info"]))
        info["squad"]["metrics"]["exact"]["display"] = "SQuAD exact match"
        info["squad"]["metrics"]["f1"]["role"] = "detail"
        info["toy"] = {"display": "Toy", "output_type": "generate", "metrics": {
            "hits": metric("Toy hits", fmt="count"), "misses": metric("Toy misses", "behaviour", fmt="count")}}
        report.update(tasks_info=info, tasks=[*report["tasks"], "toy"])
        report["metrics"]["toy"] = {"hits": 3.0, "misses": 1.0}
        report["counts"]["toy"] = {"total": 4, "max_new_tokens": 9}

    rewrite_reports(tmp_path, change)
    table = results_markdown(load_rows(tmp_path))
    header = next(line for line in table.splitlines() if line.startswith("| Row | Calibration"))
    assert header == ("| Row | Calibration | Fine-tuning | Sparsity | WikiText2 PPL ↓ | SQuAD exact match | GSM8K acc (strict) "
                      "| GSM8K acc (flex) | BoolQ acc | SQuAD NLL ↓ | GSM8K NLL ↓ | Toy hits |")
    assert "| Dense (no pruning, no FT) | none | none | not pruned | 40.00 | 25.0 | 0.0 | 6.2 | 31.2 | 4.000 | 1.400 | 3 |" in table
    assert "| Row | SQuAD F1 answerable | SQuAD EM unanswerable | SQuAD no-answer rate | BoolQ yes rate | Toy misses |" in table
    assert "Toy n = 4" in table and "majority rate" not in table.split("\n- ")[0]  # a detail metric: no column


def test_a_report_without_tasks_info_is_one_error_line(tmp_path, capsys):
    """A report written before reports described their metrics names itself and the fix."""
    from lib.experiments.rows import ReportError
    from scripts.summarize_experiments import main as summarize

    write_matrix_reports(tmp_path)
    report = json.loads((tmp_path / "exp5" / "eval.json").read_text())
    del report["tasks_info"]
    write_json(tmp_path / "exp5" / "eval.json", report)
    message = (f"{tmp_path}/exp5/eval.json has no tasks_info: it was written before evaluation reports described their "
               "metrics; re-run its evaluation (delete it and rerun scripts/run_task_experiments.sh with the same OUT, "
               "which redoes a missing eval.json)")
    with pytest.raises(ReportError) as raised:
        load_rows(tmp_path)
    assert str(raised.value) == message
    before = sorted(tmp_path.rglob("*"))
    with pytest.raises(SystemExit) as exited:
        summarize(["--out", str(tmp_path)])
    assert exited.value.code == 2 and capsys.readouterr().err == f"error: {message}\n"
    assert sorted(tmp_path.rglob("*")) == before  # no results.md, no results.png
