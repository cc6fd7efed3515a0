"""Issue 23, bullets 5 and 6: the files a model is loaded from are checked, and the tiered format checks itself.

Everything runs on real files: a tiny Llama pruned three-tier and written by `save_compressed`,
with one matrix left without a tier map so that it is stored as a bitmask, so the file holds
every tensor kind (tier_map, dense, nm_values, nm_meta, topk_values, topk_positions, bitmask,
values, plain tensors). Damage is done to the bytes on disk (flips, truncation) or by rewriting
the file with edited tensors or metadata.

What catches what (the "only checksums" column is why checksums exist):
- invariants (also with --no_verify_checksums, and for format-1 files): a tier code other than
  0-2, a map of the wrong shape, a missing or extra tensor, a tensor count that disagrees with
  the tier map, a top-k length, a 2:4 nibble with first >= second, repeated or unordered top-k
  positions, a bitmask whose bit count differs from its values, any field of the wrong dtype
  (so a changed metadata `dtype` too), metadata outside its allowed values (dtype "load",
  block size, top-k, encoding, version, shapes), and decoded shapes the config does not have;
- only checksums: a permuted tier map (same tile counts), a top-k position moved without
  breaking the order, a 2:4 nibble changed to another valid one, any changed value byte.
"""

from __future__ import annotations

import json
import logging
import random
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

import main_block_three_tier as cli
from lib.core.errors import WeightFileError
from lib.core.safetensors_header import read_header
from lib.models.arch import decoder_linear_weights
from lib.models.loading import load_model
from lib.models.weights import check_model_weights
from lib.pruning.driver import PruneConfig, prune_model
from lib.tiered.checkpoint import (COMPRESSED_FILE, VERSION, load_tiered_model, metadata_checksum, save_compressed,
                                   tensor_checksum)
from lib.tiered.format import TieredFormatError
from lib.tiered.tier_map import DENSE, TIER_MAP_FILE, TOPK, TierMetadata, load_tier_maps, save_tier_maps
from lib.training.sparsity import tensors_sha256
from tests.helpers import REPO, SAMPLE_DATA, make_llama, make_tokenizer
from scripts import eval_tasks

V1_FIXTURE = REPO / "tests" / "fixtures" / "tiered_v1"
BITMASK_MATRIX = "model.layers.1.mlp.down_proj"
KINDS = ("tier_map", "dense", "nm_values", "nm_meta", "topk_values", "topk_positions", "bitmask", "values", "plain")
FLIPS_PER_KIND = 20


@pytest.fixture(scope="module")
def pruned():
    """(a three-tier pruned tiny Llama, its tier maps minus BITMASK_MATRIX's)."""
    model = make_llama()
    samples = [torch.randint(0, 400, (1, 32), generator=torch.Generator().manual_seed(i)) for i in range(4)]
    tier_maps = prune_model(model, samples, PruneConfig(), progress=False).tier_maps
    return model, {k: v for k, v in tier_maps.items() if k != BITMASK_MATRIX}


@pytest.fixture(scope="module")
def tiered_dir(pruned, tmp_path_factory):
    """A tiered directory (config, tokenizer, tier maps, model.tiered.safetensors) with every tensor kind."""
    model, tier_maps = pruned
    path = tmp_path_factory.mktemp("tiered")
    save_compressed(model, make_tokenizer(), path, decoder_linear_weights(model), tier_maps)
    return path


@pytest.fixture
def copy(tiered_dir, tmp_path):
    """A fresh copy of the tiered directory, to damage."""
    return Path(shutil.copytree(tiered_dir, tmp_path / "model"))


def read(path: Path) -> tuple[dict[str, torch.Tensor], dict]:
    """(tensors, "tiered" metadata) of a compressed file, read without the loader's checks."""
    return load_file(path), json.loads(read_header(path)["__metadata__"]["tiered"])


def write(path: Path, tensors: dict[str, torch.Tensor], metadata: dict, recompute: bool) -> None:
    """Rewrite a compressed file; recompute=True gives it checksums that match (so only invariants can object)."""
    if recompute and "checksums" in metadata:
        metadata["checksums"]["tensors"] = {name: tensor_checksum(t) for name, t in tensors.items()}
        metadata["checksums"]["metadata"] = metadata_checksum(metadata)
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(path), metadata={"tiered": json.dumps(metadata)})


def kind_of(name: str, matrices: dict) -> str:
    prefix, _, field = name.rpartition(".")
    return field if prefix in matrices else "plain"


def load_error(model_dir: Path, verify: bool = True) -> str:
    """The one-line error of loading a damaged directory (it must be a ValueError subclass, never a traceback)."""
    with pytest.raises((TieredFormatError, WeightFileError)) as caught:
        load_tiered_model(model_dir, verify=verify)
    message = str(caught.value)
    assert "\n" not in message and str(model_dir / COMPRESSED_FILE) in message, message
    return message


def state_bits(model) -> dict[str, torch.Tensor]:
    return {k: v.view(torch.int32) if v.dtype == torch.float32 else v for k, v in model.state_dict().items()}


def same_weights(a, b) -> bool:
    x, y = state_bits(a), state_bits(b)
    return x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in x)


# ---------------------------------------------------------------- the v2 writer


def test_the_writer_stores_version_2_with_a_checksum_per_tensor(tiered_dir, pruned):
    tensors, metadata = read(tiered_dir / COMPRESSED_FILE)
    assert metadata["version"] == VERSION == 2 and metadata["checksums"]["algorithm"] == "crc32"
    assert metadata["checksums"]["tensors"] == {name: tensor_checksum(t) for name, t in tensors.items()}
    assert metadata["checksums"]["metadata"] == metadata_checksum(metadata)
    kinds = {kind_of(name, metadata["matrices"]) for name, t in tensors.items() if t.numel()}
    assert kinds == set(KINDS), "the fixture must hold every tensor kind"
    assert same_weights(load_tiered_model(tiered_dir), pruned[0])


# ---------------------------------------------------------------- byte flips, truncation


def test_every_single_byte_flip_of_every_tensor_kind_is_detected(tiered_dir, tmp_path):
    """20 seeded positions in the largest tensor of each kind: each flip fails the load, naming the file and the tensor."""
    path = tiered_dir / COMPRESSED_FILE
    original = path.read_bytes()
    header = read_header(path)
    start = 8 + int.from_bytes(original[:8], "little")
    matrices = json.loads(header["__metadata__"]["tiered"])["matrices"]
    spans = {name: e["data_offsets"] for name, e in header.items() if name != "__metadata__"}
    largest = {kind: max((n for n in spans if kind_of(n, matrices) == kind), key=lambda n: spans[n][1] - spans[n][0])
               for kind in KINDS}
    damaged = Path(shutil.copytree(tiered_dir, tmp_path / "model"))
    rng = random.Random(0)
    detected = {kind: 0 for kind in KINDS}
    for kind, name in largest.items():
        begin, end = spans[name]
        for position in rng.sample(range(start + begin, start + end), min(FLIPS_PER_KIND, end - begin)):
            data = bytearray(original)
            data[position] ^= rng.randrange(1, 256)
            (damaged / COMPRESSED_FILE).write_bytes(data)
            message = load_error(damaged)
            assert f"tensor {name} fails its crc32 checksum" in message, message
            detected[kind] += 1
    assert detected == {kind: FLIPS_PER_KIND for kind in KINDS}


def test_header_byte_flips_that_still_parse_are_detected(tiered_dir, tmp_path):
    """Flips in the JSON header: whatever still parses to a different header fails to load, in one line.

    Half the flips are arbitrary bytes; half replace a digit by a digit or a letter by a letter, which
    mostly keeps the JSON valid. A flip of the space padding to another whitespace parses to the same
    header and is harmless (the weights are identical); it is counted apart.
    """
    path = tiered_dir / COMPRESSED_FILE
    original = path.read_bytes()
    n = int.from_bytes(original[:8], "little")
    parsed = json.loads(original[8:8 + n])
    damaged = Path(shutil.copytree(tiered_dir, tmp_path / "model"))
    rng = random.Random(1)
    outcomes = {"unparsable": 0, "parsed, different": 0, "parsed, same": 0}
    for position in rng.sample(range(8, 8 + n), 300):
        data = bytearray(original)
        byte = chr(data[position])
        if position % 2 and byte.isdigit():
            data[position] = ord(rng.choice([d for d in "0123456789" if d != byte]))
        elif position % 2 and byte.isalpha():
            data[position] = ord(rng.choice([c for c in "abcdefghijklmnopqrstuvwxyzFIU" if c != byte]))
        else:
            data[position] ^= rng.randrange(1, 256)
        try:
            same = json.loads(bytes(data[8:8 + n])) == parsed
        except ValueError:
            same = None
        (damaged / COMPRESSED_FILE).write_bytes(data)
        if same:
            outcomes["parsed, same"] += 1
            assert same_weights(load_tiered_model(damaged), load_tiered_model(tiered_dir))
            continue
        outcomes["unparsable" if same is None else "parsed, different"] += 1
        load_error(damaged)
    assert outcomes["parsed, different"] >= 80 and outcomes["unparsable"] >= 50, outcomes


@pytest.mark.parametrize("keep", ["4 bytes", "half the header", "header only", "all but one byte"])
def test_truncated_tiered_file_is_one_line(copy, keep):
    path = copy / COMPRESSED_FILE
    data = path.read_bytes()
    n = 8 + int.from_bytes(data[:8], "little")
    size = {"4 bytes": 4, "half the header": n // 2, "header only": n, "all but one byte": len(data) - 1}[keep]
    path.write_bytes(data[:size])
    message = load_error(copy)
    assert "truncated" in message or "not a safetensors file" in message, message


# ---------------------------------------------------------------- edits the invariants catch (checksums recomputed)


def first(metadata: dict, encoding: str = "tiered", with_tier: int | None = None, tensors=None) -> str:
    """The first matrix of an encoding (with a tile of `with_tier`, when given)."""
    for name, info in metadata["matrices"].items():
        if info["encoding"] == encoding and (with_tier is None or bool((tensors[f"{name}.tier_map"] == with_tier).any())):
            return name
    raise AssertionError(f"no {encoding} matrix")


def edit_tier_code_7(t, m):
    name = first(m)
    t[f"{name}.tier_map"][0, 0] = 7
    return f"{name}.tier_map: tile (0, 0) has tier code 7"


def edit_map_shape(t, m):
    name = first(m)
    t[f"{name}.tier_map"] = torch.cat([t[f"{name}.tier_map"]] * 2, dim=1)
    return f"{name}.tier_map: shape"


def edit_missing_tensor(t, m):
    name = first(m)
    del t[f"{name}.nm_meta"]
    return f"tensor {name}.nm_meta is missing"


def edit_missing_plain_tensor(t, m):
    del t["model.norm.weight"]
    return "tensor model.norm.weight is missing"


def edit_extra_tensor(t, m):
    t["model.bogus.weight"] = torch.zeros(3)
    return "tensor model.bogus.weight is not a tensor of the model"


def edit_topk_length(t, m):
    name = first(m, with_tier=TOPK, tensors=t)
    t[f"{name}.topk_values"] = t[f"{name}.topk_values"][:, :-1]
    t[f"{name}.topk_positions"] = t[f"{name}.topk_positions"][:, :-1]
    return f"{name}.topk_values: shape"


def edit_unknown_encoding(t, m):
    name = first(m)
    m["matrices"][name]["encoding"] = "sparse"
    return f"{name}: encoding 'sparse' is not one of tiered, bitmask"


def edit_tile_counts(t, m):
    name = first(m, with_tier=DENSE, tensors=t)  # one dense tile becomes top-k: the dense and top-k counts disagree
    tier_map = t[f"{name}.tier_map"]
    tier_map.view(-1)[int((tier_map.flatten() == DENSE).nonzero()[0])] = TOPK
    return f"{name}.dense: shape"


def edit_duplicated_topk_positions(t, m):
    name = first(m, with_tier=TOPK, tensors=t)
    positions = t[f"{name}.topk_positions"]
    positions[0, 1] = positions[0, 0]
    return f"{name}.topk_positions: top-k tile 0, slots 0, 1"


def edit_swapped_topk_positions(t, m):
    name = first(m, with_tier=TOPK, tensors=t)
    positions = t[f"{name}.topk_positions"]
    positions[0, [0, 1]] = positions[0, [1, 0]]
    return f"{name}.topk_positions: top-k tile 0, slots 0, 1"


def edit_flipped_nm_meta_byte(t, m):
    name = first(m, with_tier=1, tensors=t)
    t[f"{name}.nm_meta"][0, 0] ^= 0xFF  # every nibble (first, second) becomes (3 - first, 3 - second)
    return f"{name}.nm_meta: 2:4 tile 0, group 0"


def edit_bitmask_bit(t, m):
    name = first(m, "bitmask")
    bitmask = t[f"{name}.bitmask"]
    bitmask[0, 0] ^= 1
    return f"{name}.values: shape"


def edit_uint8_field_as_int8(t, m):
    name = first(m)
    t[f"{name}.tier_map"] = t[f"{name}.tier_map"].view(torch.int8)
    return f"{name}.tier_map: dtype int8, expected uint8"


def edit_plain_tensor_shape(t, m):
    t["model.norm.weight"] = t["model.norm.weight"][:-1]
    return "tensor model.norm.weight decodes to float32 (63,)"


def metadata_edit(key: str, value, expected: str):
    """An edit setting metadata[key] = value; the load error must contain `expected`."""
    def edit(t, m):
        m[key] = value
        return expected

    edit.__name__ = f"edit_{key}_{value}"
    return edit


def shape_edit(label: str, new_shape, expected: str):
    """An edit of the first tiered matrix's shape [O, I] to new_shape([O, I]); `expected` is formatted with its name."""
    def edit(t, m):
        name = first(m)
        m["matrices"][name]["shape"] = new_shape(m["matrices"][name]["shape"])
        return expected.format(name=name)

    edit.__name__ = f"edit_shape_{label}"
    return edit


edit_dtype_load = metadata_edit("dtype", "load", "dtype 'load' is not one of float32, bfloat16, float16")
edit_dtype_list = metadata_edit("dtype", [1], "dtype [1] is not one of float32, bfloat16, float16")
edit_dtype_bfloat16 = metadata_edit("dtype", "bfloat16", "dtype float32, expected bfloat16")  # the values stay float32
edit_block_size_8 = metadata_edit("block_size", 8, ".tier_map: shape")
edit_block_size_6 = metadata_edit("block_size", 6, "block_size 6 is not a positive multiple of 4")
edit_topk_per_block = metadata_edit("topk_per_block", 14, ".topk_values: shape")
edit_topk_above_block_area = metadata_edit("topk_per_block", 257, "topk_per_block 257 is not in [0, 256]")
edit_version_3 = metadata_edit("version", 3, "format version 3; this toolkit reads versions 1, 2")
edit_version_1_with_checksums = metadata_edit("version", 1, "version 1 has no checksums, but this file carries them")
edit_shape_other_grid = shape_edit("other_grid", lambda s: [s[0], s[1] + 16], "{name}.tier_map: shape")
# 64 -> 63 columns: the same 4 x 4 tiles, so only the model's shape can object
edit_shape_same_grid = shape_edit("same_grid", lambda s: [s[0], s[1] - 1], "tensor {name} decodes to float32")
edit_shape_not_two_ints = shape_edit("not_two_ints", lambda s: s[:1], "{name}: shape [64] is not two positive integers")


INVARIANT_EDITS = [edit_tier_code_7, edit_map_shape, edit_missing_tensor, edit_missing_plain_tensor, edit_extra_tensor,
                   edit_dtype_load, edit_dtype_list, edit_dtype_bfloat16, edit_block_size_8, edit_block_size_6, edit_shape_other_grid,
                   edit_shape_same_grid, edit_shape_not_two_ints, edit_topk_length, edit_topk_per_block,
                   edit_topk_above_block_area, edit_unknown_encoding, edit_tile_counts, edit_duplicated_topk_positions,
                   edit_swapped_topk_positions, edit_flipped_nm_meta_byte, edit_bitmask_bit, edit_uint8_field_as_int8,
                   edit_plain_tensor_shape, edit_version_3, edit_version_1_with_checksums]


@pytest.mark.parametrize("verify", [True, False], ids=["verify", "no_verify"])
@pytest.mark.parametrize("edit", INVARIANT_EDITS, ids=lambda f: f.__name__.removeprefix("edit_"))
def test_edits_the_invariants_catch_with_checksums_recomputed(copy, edit, verify):
    path = copy / COMPRESSED_FILE
    tensors, metadata = read(path)
    expected = edit(tensors, metadata)
    write(path, tensors, metadata, recompute=True)
    message = load_error(copy, verify=verify)
    assert expected in message, message


# ---------------------------------------------------------------- edits only checksums catch


def edit_permuted_tier_map(t, m):
    name = first(m, with_tier=DENSE, tensors=t)
    flat = t[f"{name}.tier_map"].view(-1)
    i, j = int((flat == DENSE).nonzero()[0]), int((flat == TOPK).nonzero()[0])
    flat[[i, j]] = flat[[j, i]]  # the same counts per tier, tiles decoded at the wrong place
    return f"{name}.tier_map"


def edit_moved_topk_position(t, m):
    name = first(m, with_tier=TOPK, tensors=t)
    positions = t[f"{name}.topk_positions"]  # (T, k): move the last slot of a tile up by one, order kept
    tile = int(((positions[:, -1] < 255) & (t[f"{name}.topk_values"][:, -1] != 0)).nonzero()[0])
    positions[tile, -1] += 1
    return f"{name}.topk_positions"


def edit_other_valid_nm_nibble(t, m):
    name = first(m, with_tier=1, tensors=t)
    meta, values = t[f"{name}.nm_meta"], t[f"{name}.nm_values"]  # group 0 of tile 0: offsets (a, b) -> the other two
    low = int(meta[0, 0]) & 15
    other = [offset for offset in range(4) if offset not in (low & 3, low >> 2)]
    meta[0, 0] = (int(meta[0, 0]) & 0xF0) | other[0] | other[1] << 2
    assert bool(values[0, 0, :2].ne(0).any()), "the moved group must hold a nonzero"
    return f"{name}.nm_meta"


def edit_value_byte(t, m):
    name = first(m, with_tier=DENSE, tensors=t)
    t[f"{name}.dense"][0, 0, 0] += 1.0
    return f"{name}.dense"


@pytest.mark.parametrize("edit", [edit_permuted_tier_map, edit_moved_topk_position, edit_other_valid_nm_nibble,
                                  edit_value_byte], ids=lambda f: f.__name__.removeprefix("edit_"))
def test_edits_only_checksums_catch(copy, tiered_dir, edit):
    path = copy / COMPRESSED_FILE
    tensors, metadata = read(path)
    tensor = edit(tensors, metadata)
    write(path, tensors, json.loads(json.dumps(metadata)), recompute=True)
    wrong = load_tiered_model(copy)  # valid structure, valid (recomputed) checksums: wrong weights, nothing to object
    assert not same_weights(wrong, load_tiered_model(tiered_dir))
    write(path, tensors, metadata, recompute=False)  # the checksums the writer stored
    assert f"tensor {tensor} fails its crc32 checksum" in load_error(copy)
    assert not same_weights(load_tiered_model(copy, verify=False), load_tiered_model(tiered_dir)), \
        "without verification the edit loads: it is the checksums that catch it"


def test_metadata_edit_fails_the_metadata_checksum(copy):
    path = copy / COMPRESSED_FILE
    tensors, metadata = read(path)
    metadata["matrices"] = dict(reversed(metadata["matrices"].items()))  # a reordering changes nothing: passes
    write(path, tensors, metadata, recompute=False)
    load_tiered_model(copy)
    metadata["block_size"] = 8
    write(path, tensors, metadata, recompute=False)
    assert "the 'tiered' metadata fails its crc32 checksum" in load_error(copy)


# ---------------------------------------------------------------- through the real CLIs


def cli_error(capsys, code: int) -> str:
    """The single stderr line of a failed CLI run: exit 2, `error: ...`, no traceback."""
    stderr = capsys.readouterr().err.strip()
    assert code == 2 and "Traceback" not in stderr, stderr
    assert len(stderr.splitlines()) == 1 and stderr.startswith("error: "), stderr
    return stderr


@pytest.mark.parametrize("edit", [edit_tier_code_7, edit_map_shape, edit_missing_tensor, edit_dtype_load, edit_block_size_8,
                                  edit_shape_other_grid, edit_topk_length, edit_unknown_encoding, edit_duplicated_topk_positions,
                                  edit_swapped_topk_positions, edit_flipped_nm_meta_byte, edit_dtype_bfloat16,
                                  edit_permuted_tier_map],
                         ids=lambda f: f.__name__.removeprefix("edit_"))
def test_tampered_tiered_model_is_one_line_in_eval_tasks(copy, tmp_path, capsys, edit):
    path = copy / COMPRESSED_FILE
    tensors, metadata = read(path)
    edit(tensors, metadata)
    write(path, tensors, metadata, recompute=False)
    output = tmp_path / "eval.json"
    code = eval_tasks.main(["--model", str(copy), "--tasks", "wikitext2", "--data_dir", str(SAMPLE_DATA), "--device", "cpu",
                            "--seqlen", "32", "--eval_windows", "1", "--output", str(output)])
    assert str(path) in cli_error(capsys, code) and not output.exists()


@pytest.mark.parametrize("damage, expected", [("truncated", "truncated: the header describes"),
                                             ("last byte flipped", "fails its crc32 checksum"),
                                             ("header digit changed", "damaged header")])
def test_damaged_tiered_bytes_are_one_line_in_eval_tasks(copy, tmp_path, capsys, damage, expected):
    path = copy / COMPRESSED_FILE
    data = bytearray(path.read_bytes())
    if damage == "truncated":
        data = data[:-1000]
    elif damage == "last byte flipped":
        data[-1] ^= 0x40
    else:  # the end offset of the first entry: its span no longer matches its shape
        end = data.index(b"]", data.index(b'"data_offsets":[')) - 1
        data[end] = ord("1") if data[end] != ord("1") else ord("2")
    path.write_bytes(data)
    code = eval_tasks.main(["--model", str(copy), "--tasks", "wikitext2", "--data_dir", str(SAMPLE_DATA), "--device", "cpu",
                            "--output", str(tmp_path / "eval.json")])
    line = cli_error(capsys, code)
    assert line.startswith(f"error: {path}: ") and expected in line, line


def test_flag_skips_checksums_in_eval_tasks_and_prune(copy, tmp_path, capsys):
    path = copy / COMPRESSED_FILE
    tensors, metadata = read(path)
    edit_value_byte(tensors, metadata)
    write(path, tensors, metadata, recompute=False)
    args = ["--model", str(copy), "--tasks", "wikitext2", "--data_dir", str(SAMPLE_DATA), "--device", "cpu", "--seqlen", "32",
            "--eval_windows", "1"]
    assert "fails its crc32 checksum" in cli_error(capsys, eval_tasks.main([*args, "--output", str(tmp_path / "a.json")]))
    assert eval_tasks.main([*args, "--output", str(tmp_path / "b.json"), "--no_verify_checksums"]) == 0
    capsys.readouterr()  # the progress bars of the evaluation
    prune = ["--model", str(copy), "--data_dir", str(SAMPLE_DATA), "--nsamples", "2", "--seqlen", "32", "--device", "cpu",
             "--no_eval"]
    assert "fails its crc32 checksum" in cli_error(capsys, cli.main([*prune, "--save", str(tmp_path / "run1")]))
    assert cli.main([*prune, "--save", str(tmp_path / "run2"), "--no_verify_checksums"]) == 0


def test_finetune_flag_reaches_model_arguments(tmp_path):
    from lib.training.args import parse_args

    model_args, _, _ = parse_args("lm", ["--output_dir", str(tmp_path / "ft"), "--no_verify_checksums", "--use_cpu"])
    assert model_args.verify_checksums is False
    assert parse_args("lm", ["--output_dir", str(tmp_path / "ft"), "--use_cpu"])[0].verify_checksums is True


def run_script(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, cwd=REPO, timeout=300)


def test_tampered_tiered_model_through_a_real_process(copy, tmp_path):
    path = copy / COMPRESSED_FILE
    tensors, metadata = read(path)
    edit_tier_code_7(tensors, metadata)
    write(path, tensors, metadata, recompute=False)
    run = run_script("main_block_three_tier.py", "--model", str(copy), "--data_dir", str(SAMPLE_DATA), "--nsamples", "2",
                     "--seqlen", "32", "--device", "cpu", "--no_eval", "--save", str(tmp_path / "run"))
    assert run.returncode == 2 and "Traceback" not in run.stderr, run.stderr
    line = run.stderr.strip().splitlines()[-1]
    assert run.stderr.count("error:") == 1 and line.startswith("error: ") and str(path) in line, run.stderr
    assert f"tensor {first(metadata)}.tier_map fails its crc32 checksum" in line


@pytest.mark.parametrize("entry, expected", [
    ({"dtype": [1], "shape": [1], "data_offsets": [0, 4]}, "tensor 'a' has no valid dtype, shape and data_offsets"),
    ({"dtype": "F32", "shape": [2], "data_offsets": [0, 4]}, "tensor 'a' (F32 [2]) spans bytes 0..4, which is not its size"),
    ({"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}, "leave a gap or overlap at byte 0"),
])
def test_damaged_header_entries_are_named(tmp_path, entry, expected):
    header = json.dumps({"a": entry}).encode()
    path = tmp_path / "x.safetensors"
    path.write_bytes(len(header).to_bytes(8, "little") + header + bytes(8))
    with pytest.raises(WeightFileError, match=f"^{re.escape(str(path))}: damaged header: .*{re.escape(expected)}"):
        read_header(path)


# ---------------------------------------------------------------- plain (save_pretrained) model directories


@pytest.fixture
def plain_dir(tiny_llama_dir, tmp_path):
    return Path(shutil.copytree(tiny_llama_dir, tmp_path / "plain"))


@pytest.mark.parametrize("damage, expected", [
    ("truncated", "truncated: the header describes"),
    ("garbage", "not a safetensors file"),
    ("empty", "shorter than the 8-byte header length"),
    ("appended", "bytes after the last tensor"),
])
def test_damaged_model_safetensors_is_one_line(plain_dir, tmp_path, capsys, damage, expected):
    weights = plain_dir / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes({"truncated": data[:len(data) // 2], "garbage": bytes(random.Random(0).randrange(256) for _ in range(4096)),
                         "empty": b"", "appended": data + b"\0" * 16}[damage])
    code = eval_tasks.main(["--model", str(plain_dir), "--tasks", "wikitext2", "--data_dir", str(SAMPLE_DATA),
                            "--device", "cpu", "--output", str(tmp_path / "eval.json")])
    line = cli_error(capsys, code)
    assert f"{weights}: " in line and expected in line, line


def test_truncated_model_safetensors_through_a_real_process(plain_dir, tmp_path):
    weights = plain_dir / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-100])
    run = run_script("scripts/eval_tasks.py", "--model", str(plain_dir), "--tasks", "wikitext2", "--data_dir", str(SAMPLE_DATA),
                     "--device", "cpu", "--output", str(tmp_path / "eval.json"))
    assert run.returncode == 2 and "Traceback" not in run.stderr, run.stderr
    assert run.stderr.count("error:") == 1 and f"error: {weights}: truncated" in run.stderr, run.stderr


def test_weights_of_another_config_or_missing_tensors_are_named(plain_dir):
    weights = plain_dir / "model.safetensors"
    tensors = load_file(weights)
    save_file({**tensors, "model.norm.weight": torch.ones(63)}, str(weights), metadata={"format": "pt"})
    with pytest.raises(WeightFileError, match=r"tensor model.norm.weight has shape \(63,\), but the model of .* needs \(64,\)"):
        load_model(str(plain_dir), device="cpu")
    save_file({k: v for k, v in tensors.items() if k != "model.layers.0.mlp.up_proj.weight"}, str(weights), metadata={"format": "pt"})
    with pytest.raises(WeightFileError, match="lacks 1 tensors .* e.g. model.layers.0.mlp.up_proj.weight"):
        load_model(str(plain_dir), device="cpu")


def test_sharded_weights_are_checked_shard_by_shard(plain_dir):
    tensors = load_file(plain_dir / "model.safetensors")
    (plain_dir / "model.safetensors").unlink()
    names = sorted(tensors)
    shards = {"model-00001-of-00002.safetensors": names[::2], "model-00002-of-00002.safetensors": names[1::2]}
    for shard, keys in shards.items():
        save_file({k: tensors[k] for k in keys}, str(plain_dir / shard), metadata={"format": "pt"})
    index = plain_dir / "model.safetensors.index.json"
    index.write_text(json.dumps({"metadata": {}, "weight_map": {k: s for s, keys in shards.items() for k in keys}}))
    check_model_weights(plain_dir)
    model, _ = load_model(str(plain_dir), device="cpu")
    shard = plain_dir / "model-00002-of-00002.safetensors"
    shard.write_bytes(shard.read_bytes()[:-1])
    with pytest.raises(WeightFileError, match=f"{shard}: truncated"):
        check_model_weights(plain_dir)
    index.write_text("{not json")
    with pytest.raises(WeightFileError, match=f"{index}: damaged shard index"):
        check_model_weights(plain_dir)


def test_compress_model_checks_its_input_weights(plain_dir, tmp_path):
    weights = plain_dir / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    run = run_script("scripts/compress_model.py", str(plain_dir), str(tmp_path / "out"))
    assert run.returncode == 2 and run.stderr.strip().splitlines() == [run.stderr.strip()], run.stderr
    assert run.stderr.startswith(f"error: {weights}: ") and not (tmp_path / "out").exists()


# ---------------------------------------------------------------- tier maps


@pytest.mark.parametrize("damage, expected", [
    ("code 3", "tier map model.layers.0.mlp.up_proj holds the code 3"),
    ("3-D map", "tier map model.layers.0.mlp.up_proj is U8 [1, 6, 4]; tier maps are 2-D uint8"),
    ("int64 map", "tier map model.layers.0.mlp.up_proj is I64 [6, 4]"),
    ("metadata not JSON", "damaged metadata: a value is not JSON"),
    ("truncated", "truncated"),
])
def test_damaged_tier_map_file_is_one_line(tmp_path, damage, expected):
    maps = {"model.layers.0.mlp.up_proj": torch.zeros(6, 4, dtype=torch.uint8)}
    path = tmp_path / TIER_MAP_FILE
    save_tier_maps(path, maps, TierMetadata(16))
    assert torch.equal(load_tier_maps(path)[0]["model.layers.0.mlp.up_proj"], maps["model.layers.0.mlp.up_proj"])
    name = "model.layers.0.mlp.up_proj"
    if damage == "code 3":
        save_file({name: torch.full((6, 4), 3, dtype=torch.uint8)}, str(path))
    elif damage == "3-D map":
        save_file({name: torch.zeros(1, 6, 4, dtype=torch.uint8)}, str(path))
    elif damage == "int64 map":
        save_file({name: torch.zeros(6, 4, dtype=torch.int64)}, str(path))
    elif damage == "metadata not JSON":
        save_file(maps, str(path), metadata={"block_size": "{16"})
    else:
        path.write_bytes(path.read_bytes()[:-3])
    with pytest.raises(WeightFileError) as caught:
        load_tier_maps(path)
    assert str(caught.value).startswith(f"{path}: ") and expected in str(caught.value) and "\n" not in str(caught.value)


# ---------------------------------------------------------------- format version 1


def test_version_1_still_loads_bit_exact_with_one_warning(caplog):
    expected = json.loads((V1_FIXTURE / "expected.json").read_text())["state_dict_sha256"]
    with caplog.at_level(logging.WARNING, logger="lib.tiered.checkpoint"):
        model = load_tiered_model(V1_FIXTURE)
    assert tensors_sha256(model.state_dict()) == expected
    warnings = [r.getMessage() for r in caplog.records if r.name == "lib.tiered.checkpoint"]
    assert len(warnings) == 1 and "format version 1, which has no checksums" in warnings[0], warnings
    _, metadata = read(V1_FIXTURE / COMPRESSED_FILE)
    assert metadata["version"] == 1 and "checksums" not in metadata
    assert {m["encoding"] for m in metadata["matrices"].values()} == {"tiered", "bitmask"}


def test_version_1_structure_is_still_checked(tmp_path):
    copy = Path(shutil.copytree(V1_FIXTURE, tmp_path / "v1"))
    tensors, metadata = read(copy / COMPRESSED_FILE)
    expected = edit_duplicated_topk_positions(tensors, metadata)
    write(copy / COMPRESSED_FILE, tensors, metadata, recompute=True)  # v1: no checksums to recompute
    assert expected in load_error(copy)


def test_compress_model_rewrites_a_version_1_directory_as_version_2(tmp_path):
    v1 = Path(shutil.copytree(V1_FIXTURE, tmp_path / "v1"))
    make_tokenizer().save_pretrained(v1)
    run = run_script("scripts/compress_model.py", str(v1), str(tmp_path / "v2"), "--verify")
    assert run.returncode == 0, run.stderr
    _, metadata = read(tmp_path / "v2" / COMPRESSED_FILE)
    assert metadata["version"] == 2 and metadata["checksums"]["tensors"]
    expected = json.loads((V1_FIXTURE / "expected.json").read_text())["state_dict_sha256"]
    assert tensors_sha256(load_tiered_model(tmp_path / "v2").state_dict()) == expected
