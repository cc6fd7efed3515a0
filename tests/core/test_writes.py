"""The output rule's writers without a CLI (lib/core/writes.py, lib/core/files.py): two processes racing for one
path, stale temporaries of dead processes, atomic JSON reports."""

import json
import subprocess
import sys
import textwrap

import pytest

from lib.core.errors import OutputError
from lib.core.markers import MARKER_FILE, manifest, write_marker
from lib.core.writes import atomic_dir, write_output_json
from tests.helpers import REPO, dead_pid


WRITER = textwrap.dedent("""
    import sys, time
    sys.path.insert(0, sys.argv[1])
    from lib.core.errors import OutputError
    from lib.core.writes import atomic_dir
    target, wins, refused = sys.argv[2], 0, 0
    deadline = time.time() + float(sys.argv[3])
    while time.time() < deadline:
        try:
            with atomic_dir(target, "results") as out:
                for i in range(20):
                    (out / f"part{i}.txt").write_text(str(i))
            wins += 1
        except OutputError as err:
            assert "is being written by another process (pid" in str(err) and "\\n" not in str(err), err
            refused += 1
    print(wins, refused)
""")


def test_two_processes_writing_one_path(tmp_path):
    """Two writers race for 3 s: each attempt wins or gets the one-line error; no other failure, nothing half-written."""
    script = tmp_path / "writer.py"
    script.write_text(WRITER)
    target = tmp_path / "out" / "r"
    procs = [subprocess.Popen([sys.executable, str(script), str(REPO), str(target), "3"], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(2)]
    results = [p.communicate(timeout=60) for p in procs]
    assert all(p.returncode == 0 for p in procs), results
    counts = [tuple(map(int, out.split())) for out, _ in results]
    assert all(wins > 0 for wins, _ in counts) and sum(refused for _, refused in counts) > 0, counts
    assert sorted(p.name for p in target.parent.iterdir()) == ["r"]  # no .partial, .old or .lock left
    assert sorted(p.name for p in target.iterdir()) == sorted([MARKER_FILE] + [f"part{i}.txt" for i in range(20)])


def test_stale_temporaries_are_removed_and_an_interrupted_swap_restored(tmp_path):
    pid = dead_pid()
    target = tmp_path / "r"
    (tmp_path / f".r.partial-{pid}").mkdir()
    (tmp_path / f".r.partial-{pid}" / "big.bin").write_bytes(b"0" * 1000)
    (tmp_path / f".r.old-{pid}").mkdir()  # killed between moving the old result aside and the new one in
    (tmp_path / f".r.old-{pid}" / "results.json").write_text('{"earlier": 1}')
    write_marker(tmp_path / f".r.old-{pid}", "results", manifest(tmp_path / f".r.old-{pid}"))
    (tmp_path / f".other.partial-{pid}").mkdir()  # another output's: not ours to touch
    with pytest.raises(RuntimeError):
        with atomic_dir(target, "results"):
            raise RuntimeError("the run fails")
    assert (target / "results.json").read_text() == '{"earlier": 1}'  # restored, then kept by the failed run
    assert sorted(p.name for p in tmp_path.iterdir()) == [f".other.partial-{pid}", "r"]


def test_file_output_is_atomic_and_refuses_foreign_files(tmp_path):
    path = tmp_path / "report.json"
    write_output_json(path, {"a": 1}, "eval_report")
    write_output_json(path, {"a": 2}, "eval_report")
    assert json.loads(path.read_text())["a"] == 2
    path.write_text("not json")
    with pytest.raises(OutputError, match="did not write"):
        write_output_json(path, {"a": 3}, "eval_report")
    write_output_json(path, {"a": 3}, "eval_report", overwrite=True)
    assert json.loads(path.read_text())["a"] == 3 and [p.name for p in tmp_path.iterdir()] == ["report.json"]
