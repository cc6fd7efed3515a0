"""scripts/compare_lm_eval.py reads its table (lm-eval task, YAML, local file, metrics) from the evaluation tasks."""

from __future__ import annotations

import json
import subprocess
import sys

from lib.eval.tasks.task import members
from tests.helpers import REPO, SAMPLE_DATA

sys.path.insert(0, str(REPO / "scripts"))
import compare_lm_eval  # noqa: E402


def test_the_table_is_the_zero_shot_tasks_with_their_local_files():
    table = compare_lm_eval.compared_tasks()
    assert list(table) == [task.name for task in members("zeroshot")]  # the eight multiple-choice tasks, suite order
    assert table["boolq"].overrides == 'doc_to_target: "{{ 1 if answer else 0 }}"\n' and table["rte"].metrics == ("acc",)
    assert compare_lm_eval.local_file("boolq") == "boolq/dev.jsonl"
    assert all((SAMPLE_DATA / compare_lm_eval.local_file(task)).is_file() for task in table)


def test_our_side_scores_the_same_rows_as_the_task(tmp_path, tiny_llama_dir):
    out = tmp_path / "ours.json"
    run = subprocess.run([sys.executable, str(REPO / "scripts" / "compare_lm_eval.py"), "ours", "--model", str(tiny_llama_dir),
                          "--data_dir", str(SAMPLE_DATA), "--tasks", "boolq", "rte", "--limit", "2", "boolq=3",
                          "--output", str(out)], capture_output=True, text=True, cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    tasks = json.loads(out.read_text())["tasks"]
    assert [tasks[t]["n"] for t in ("boolq", "rte")] == [3, 2]
    assert set(tasks["boolq"]["per_example"][0]) == {"acc", "acc_norm"}
    assert tasks["boolq"]["metrics"]["acc"] == sum(e["acc"] for e in tasks["boolq"]["per_example"]) / 3
