"""Pareto frontier (lib/tiered/cost.py) and scripts/plot_frontier.py on a hand-made bench_quality JSON."""

import json

import scripts.plot_frontier as plot_frontier


def test_plot_frontier_draws_and_prints_the_table(tmp_path, capsys):
    rows = [{"configuration": name, "sparsity": s, "ppl": ppl, "stored_bytes": b, "weight_bytes_per_token": b, "macs_per_token": m}
            for name, s, ppl, b, m in [("dense", 0.0, 30.0, 500e6, 130e6), ("2:4 wanda", 0.5, 180.0, 300e6, 80e6),
                                       ("three_tier x", 0.41, 120.0, 320e6, 70e6), ("unstructured", 0.41, 40.0, 330e6, 90e6)]]
    rows[2].update(ppl_sd=4.0)  # a row over several seeds: drawn with its sd bar
    source = tmp_path / "bench.json"
    source.write_text(json.dumps({"settings": {"model": "m", "eval_windows": 2, "seqlen": 8}, "rows": rows}))
    assert plot_frontier.main([str(source), "--output", str(tmp_path / "frontier.png")]) == 0
    assert (tmp_path / "frontier.png").stat().st_size > 10_000
    table = {line.split("|")[1].strip(): line.split("|")[-2].strip() for line in capsys.readouterr().out.splitlines()[2:]}
    # bytes: 2:4 (300 MB) beats three-tier (320 MB) on size only, not on PPL: both stay; MACs: 2:4 (80M, 180) is beaten by three-tier (70M, 120)
    assert table == {"dense": "yes / yes", "2:4 wanda": "yes / no", "three_tier x": "yes / yes", "unstructured": "yes / yes"}


def test_rows_without_cost_fields_are_one_clear_error(tmp_path, capsys):
    source = tmp_path / "old.json"
    source.write_text(json.dumps({"rows": [{"configuration": "dense", "ppl": 30.0, "sparsity": 0.0}]}))
    assert plot_frontier.main([str(source)]) == 2
    assert capsys.readouterr().err.startswith("error:")


def test_plot_frontier_with_seeds_removes_only_established_dominations(tmp_path, capsys):
    spec = [("dense", 0.0, [30.0], 500e6, 130e6), ("2:4 a", 0.5, [84.0, 85.0, 86.0], 340e6, 81e6),
            ("three_tier b", 0.5, [82.0, 84.0, 86.5], 339e6, 81e6), ("4:8 c", 0.5, [66.0, 66.5, 67.0], 339e6, 81e6)]
    rows = [{"configuration": name, "sparsity": s, "ppl": sum(v) / len(v), "ppl_per_seed": v,
             **({"ppl_sd": 1.0} if len(v) > 1 else {}), "stored_bytes": b, "weight_bytes_per_token": b, "macs_per_token": m}
            for name, s, v, b, m in spec]
    source = tmp_path / "bench.json"
    source.write_text(json.dumps({"settings": {"model": "m", "eval_windows": 2, "seqlen": 8}, "rows": rows}))
    assert plot_frontier.main([str(source), "--output", str(tmp_path / "frontier.png")]) == 0
    out = capsys.readouterr().out
    table = {line.split("|")[1].strip(): line.split("|")[-2].strip() for line in out.splitlines()[2:6]}
    # b is cheaper than a and lower on average, but within the seed spread: a is removed only by 4:8 c
    assert table == {"dense": "yes / yes", "2:4 a": "no / no", "three_tier b": "no / no", "4:8 c": "yes / yes"}
    assert "- 4:8 c beats 2:4 a:" in out and "- three_tier b beats 2:4 a" not in out
    assert "| 85.00 ± 1.00 |" in out


def test_crowded_labels_are_stacked_and_lone_ones_are_not():
    from lib.experiments.plots import label_offsets

    # three points at almost the same cost and PPL, one far away: the crowd gets three distinct heights
    offsets = label_offsets([339.0, 339.5, 339.2, 538.0], [81.0, 82.0, 84.0, 30.0])
    assert offsets[3] == 3.0 and sorted(offsets[:3]) == [3.0, 11.0, 19.0]


def test_an_existing_file_is_replaced_only_with_overwrite(tmp_path, capsys):
    rows = [{"configuration": "dense", "sparsity": 0.0, "ppl": 30.0, "stored_bytes": 5e8, "weight_bytes_per_token": 5e8,
             "macs_per_token": 1e8}]
    source = tmp_path / "bench.json"
    source.write_text(json.dumps({"rows": rows}))
    figure = tmp_path / "frontier.png"
    figure.write_bytes(b"the user's own figure")
    assert plot_frontier.main([str(source), "--output", str(figure)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --output") and "--overwrite" in err and len(err.strip().splitlines()) == 1
    assert figure.read_bytes() == b"the user's own figure"
    assert plot_frontier.main([str(source), "--output", str(source)]) == 2  # the input itself: refused even so
    assert plot_frontier.main([str(source), "--output", str(source), "--overwrite"]) == 2
    assert json.loads(source.read_text()) == {"rows": rows}
    assert plot_frontier.main([str(source), "--output", str(figure), "--overwrite"]) == 0
    assert figure.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bench.json", "frontier.png"]  # no temporaries or locks


def test_an_unreadable_input_is_one_line(tmp_path, capsys):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    for path in (bad, tmp_path / "missing.json"):
        assert plot_frontier.main([str(path), "--output", str(tmp_path / "f.png")]) == 2
        assert capsys.readouterr().err.startswith(f"error: cannot read {path}")
    assert not (tmp_path / "f.png").exists()
