#!/usr/bin/env python
"""Prune a causal LM with the three-tier block scheme (or a baseline) and report perplexity.

    python main_block_three_tier.py --model meta-llama/Llama-2-7b-hf \
        --sparsity_ratios 0.35 0.45 0.2 --nsamples 128 \
        --save out/llama2_7b/wikitext_pruned/ --calibration_dataset wikitext2

With no --model it runs on the embedded default (SmolLM2-135M-Instruct).
"""

from __future__ import annotations

import logging
import sys
import time
from dataclasses import asdict, dataclass

from lib.core.arguments import DataclassParser, flag
from lib.core.cli import check_range, run_or_fail, seed_everything, setup_logging
from lib.core.errors import ModelLoadError, OutputError
from lib.core.outputs import Output, claim_outputs
from lib.core.results import Timer, environment_info, write_json
from lib.core.writes import atomic_dir
from lib.data import check_sources, dataset_names, get_loaders, parse_mixture
from lib.eval.perplexity import perplexity, perplexity_report, window_count
from lib.models.arch import decoder_linear_weights, measure_sparsity
from lib.models.checks import check_seqlen, effective_seqlen, given_seqlen
from lib.models.loading import (DEFAULT_MODEL, check_model_early, load_model, model_label, run_inputs, save_model,
                                saved_size_estimate)
from lib.pruning.driver import PruneConfig, check_block_fits, prune_model
from lib.pruning.masks import DEFAULT_RATIOS
from lib.tiered.checkpoint import NO_VERIFY_HELP, save_compressed
from lib.tiered.tier_map import TIER_MAP_FILE, TIER_NAMES, save_tier_maps

logger = logging.getLogger("main_block_three_tier")
DEFAULT_SEQLEN = 2048
RATIO_ALIASES = ("top_dense_ratio", "mid_2_4_ratio", "bottom_topk_ratio")  # the fork's spelling of --sparsity_ratios


def _calibration_help() -> str:
    return f"one of {', '.join(dataset_names())}, or a mixture like wikitext2+squad or wikitext2:0.7,gsm8k:0.3"


@dataclass
class RunArguments:
    """The flags beside PruneConfig's: model, calibration data, device, outputs, evaluation. Checked on construction
    (one-line ValueErrors naming the flag); the data files and the model are checked later, before any weights load."""

    model: str = flag(DEFAULT_MODEL, f"Hub id, local model dir, .gguf file, or the alias {DEFAULT_MODEL}")
    seed: int = flag(0, "seed for calibration sampling and torch")
    nsamples: int = flag(128, "number of calibration samples")
    seqlen: int | None = flag(None, f"calibration/evaluation length (default {DEFAULT_SEQLEN}, capped at the model's "
                              "max_position_embeddings; a larger explicit value is an error)")
    calibration_dataset: str = flag("wikitext2", _calibration_help, aliases=("--calib_dataset",))
    calibration_packing: str = flag("concat", "concat: pack examples into full seqlen samples (default); none: one "
                                    "example per sample", choices=("concat", "none"))
    data_dir: str | None = flag(None, "local data root laid out like the official releases (default: env "
                                "WANDA_DATA_DIR, else the Hub)")
    top_dense_ratio: float | None = flag(None, "alias: first of --sparsity_ratios")
    mid_2_4_ratio: float | None = flag(None, "alias: second of --sparsity_ratios")
    bottom_topk_ratio: float | None = flag(None, "alias: third of --sparsity_ratios")
    device: str | None = flag(None, "cuda, cuda:1, cpu (default: cuda if available)")
    device_map: str | None = flag(None, "e.g. auto: spread a model larger than one GPU")
    dtype: str = flag("auto", "dtype to load the model in (auto: its own)",
                      choices=("auto", "float32", "bfloat16", "float16"))
    verify_checksums: bool = flag(True, NO_VERIFY_HELP)
    save: str | None = flag(None, "results directory (results.json, log, tier maps, heat map)")
    save_model: str | None = flag(None, "directory for the pruned model (save_pretrained)")
    overwrite: bool = flag(False, "let --save/--save_model/--save_compressed write into a directory this toolkit did "
                           "not write: same-named entries are replaced, nothing else is deleted (default: refuse)")
    save_compressed: str | None = flag(None, "directory for the pruned model in the compact tiered format "
                                       "(docs/tiered-format.md)")
    eval_windows: int | None = flag(None, "evaluate perplexity on the first N windows (default all)")
    eval_batch_size: int = flag(1, "evaluation windows per forward")
    no_eval: bool = flag(False, "skip the perplexity evaluation")

    def __post_init__(self) -> None:
        check_range("--seed", self.seed, 0, 2**32 - 1)  # what NumPy's generator accepts
        check_range("--nsamples", self.nsamples, 1)
        check_range("--eval_windows", self.eval_windows, 1)
        check_range("--eval_batch_size", self.eval_batch_size, 1)
        if self.seqlen is not None:
            check_seqlen(self.seqlen)
        try:  # a name or share that is not one: before the model loads
            parse_mixture(self.calibration_dataset)
        except ValueError as err:
            raise ValueError(f"--calibration_dataset {self.calibration_dataset}: {err}") from None


def build_parser() -> DataclassParser:
    """The pruning CLI: RunArguments' flags, then PruneConfig's (lib.pruning.driver), with today's spellings."""
    parser = DataclassParser((RunArguments, PruneConfig), description=__doc__)
    parser.set_defaults(ratios=None)  # None: not given, so that the fork's three ratio flags can stand in
    return parser


def resolve_ratios(values: dict) -> tuple[float, float, float]:
    """The three-tier ratios from the parsed flags: --sparsity_ratios, all three fork aliases, or the default."""
    aliases = tuple(values[name] for name in RATIO_ALIASES)
    if any(a is not None for a in aliases):
        if values["ratios"] is not None or any(a is None for a in aliases):
            raise ValueError("give either --sparsity_ratios R1 R2 R3 or all three of --top_dense_ratio/--mid_2_4_ratio/--bottom_topk_ratio")
        return aliases
    return tuple(values["ratios"]) if values["ratios"] is not None else DEFAULT_RATIOS


def parse_arguments(parser: DataclassParser, values: dict) -> tuple[RunArguments, PruneConfig]:
    """(run arguments, pruning config) from the parsed flags; a bad value raises a one-line ValueError naming its flag."""
    run_args, config = parser.parse_dict({**values, "ratios": resolve_ratios(values)})
    return run_args, config


def method_label(config: PruneConfig) -> str:
    label = f"{config.prune_method}_{config.sparsity_type}"
    if config.sparsity_type == "three_tier":
        intra = "magnitude" if config.intra_block_score == "magnitude" else "wanda" if config.prune_method == "sparsegpt" else config.prune_method
        label += f"_{intra}_{config.tier_scope}" + ("_owl" if config.owl else "")
    return label


def summary_table(result, sparsity: dict, ppl: dict | None, timings: dict) -> str:
    tiers = {t: sum(r["tiers"][t] for r in result.matrices if "tiers" in r) for t in TIER_NAMES}
    n_blocks = sum(tiers.values())
    lines = ["", f"{'matrices pruned':<22}{len(result.matrices)}"]
    if n_blocks:
        lines += [f"{'blocks ' + t:<22}{n:>10}  ({n / n_blocks:.2%})" for t, n in tiers.items()]
    lines.append(f"{'sparsity (weights)':<22}{sparsity['sparsity']:.4%}")
    if ppl:
        interval = f", 95% CI {ppl['ppl_ci95_low']:.3f}-{ppl['ppl_ci95_high']:.3f}" if ppl.get("ppl_ci95_low") else ""
        lines.append(f"{'perplexity':<22}{ppl['ppl']:.3f}  ({ppl['n_windows']} windows x {ppl['seqlen']} tokens{interval})")
    lines.append(f"{'time':<22}" + ", ".join(f"{k} {v:.1f}s" for k, v in timings.items()))
    return "\n".join(lines)


def run(parser: DataclassParser, values: dict) -> dict:
    """Check everything the flags (`values`, as parsed), the model's config and the data files tell, then prune
    (`prune_and_save`)."""
    args, config = parse_arguments(parser, values)
    explicit_seqlen = given_seqlen(args, DEFAULT_SEQLEN)
    size = saved_size_estimate(args.model)  # the dense model; a compressed copy takes at least a quarter
    outputs = [Output("--save", args.save, "results"), Output("--save_model", args.save_model, "model", size=size),
               Output("--save_compressed", args.save_compressed, "compressed_model", size=size // 4)]
    with claim_outputs(outputs, run_inputs(args.model, data_dir=args.data_dir), overwrite=args.overwrite):
        check_model_early(args.model, args.seqlen, explicit_seqlen)  # the config, before any weights
        eval_text = check_sources(args.calibration_dataset, args.data_dir, evaluation=not args.no_eval)
        return prune_and_save(args, config, explicit_seqlen, eval_text)


def prune_and_save(args: RunArguments, config: PruneConfig, explicit_seqlen: bool = True,
                   eval_text: str | None = None) -> dict:
    """Load, calibrate, prune, evaluate and write the outputs (claimed by `run`)."""
    seed_everything(args.seed)
    timer = Timer()
    start = time.perf_counter()
    with timer("load"):
        model, tokenizer = load_model(args.model, args.dtype, args.device, args.device_map, args.verify_checksums)
    check_block_fits(model, config)  # before calibration data is even tokenized
    seqlen = effective_seqlen(model, args.seqlen, explicit_seqlen)
    with timer("data"):
        trainloader, testenc = get_loaders(
            args.calibration_dataset, nsamples=args.nsamples, seed=args.seed, seqlen=seqlen,
            tokenizer=tokenizer, data_dir=args.data_dir, packing=args.calibration_packing,
        )
    n_windows = None  # the evaluation's windows, counted before pruning: a short text fails here, not after
    if not args.no_eval:
        n_windows = window_count(testenc.input_ids.shape[1], seqlen, args.eval_windows,
                                 f"the evaluation text {eval_text or ''}".strip())
    logger.info("pruning %s: %s", args.model, method_label(config))
    result = prune_model(model, [inp for inp, _ in trainloader], config)
    timings = {**timer.seconds, **result.timings}
    sparsity = measure_sparsity(model)
    ppl = None
    if not args.no_eval:
        with timer("evaluation"):
            ppl = perplexity(model, testenc.input_ids, seqlen, n_windows, args.eval_batch_size)
        ppl.update(perplexity_report(ppl)["metrics"])  # + ppl_stderr, ppl_ci95_low/high, nll_stderr
        timings["evaluation"] = timer.seconds["evaluation"]
    timings["total"] = time.perf_counter() - start
    report = {
        "model": args.model,
        "method": method_label(config),
        "args": {**asdict(args), **asdict(config)},  # every flag's value, as used
        "config": {**config.__dict__, "ratios": list(config.ratios)},
        "seed": args.seed,
        "seqlen": seqlen,
        "environment": environment_info(),
        "sparsity": sparsity,
        "perplexity": ppl,
        "layer_ratios": [list(r) for r in result.layer_ratios],
        "outlier_ratios": result.outlier_ratios,
        "unpruned": result.unpruned,
        "matrices": result.matrices,
        "timings": timings,
    }
    metadata = config.tier_metadata(args.model)
    if args.save:
        with atomic_dir(args.save, "results", args.overwrite, "--save") as out:
            write_json(out / "results.json", report)
            with open(out / f"log_{model_label(args.model)}.txt", "w") as f:
                f.write("method\tactual_sparsity\tppl_test\n")
                f.write(f"{report['method']}\t{sparsity['sparsity']:.4f}\t{ppl['ppl'] if ppl else float('nan'):.4f}\n")
            if result.tier_maps:
                save_tier_maps(out / TIER_MAP_FILE, result.tier_maps, metadata)
                from lib.pruning.report import plot_tier_maps

                plot_tier_maps(result.tier_maps, out / "tier_map.png", title=f"{args.model} {report['method']}")
        logger.info("results written to %s", args.save)
    if args.save_model:
        with atomic_dir(args.save_model, "model", args.overwrite, "--save_model") as out:
            save_model(model, tokenizer, out)
            if result.tier_maps:
                save_tier_maps(out / TIER_MAP_FILE, result.tier_maps, metadata)
        logger.info("pruned model written to %s", args.save_model)
    if args.save_compressed:
        with atomic_dir(args.save_compressed, "compressed_model", args.overwrite, "--save_compressed") as out:
            save_compressed(model, tokenizer, out, decoder_linear_weights(model), result.tier_maps, metadata)
        logger.info("compressed model written to %s", args.save_compressed)
    logger.info("summary:%s", summary_table(result, sparsity, ppl, timings))
    return report


def main(argv: list[str] | None = None) -> int:
    setup_logging()
    parser = build_parser()
    values = vars(parser.parse_args(argv))  # an unknown flag or a bad type or choice: one line, exit 2
    return run_or_fail(run, parser, values, errors=(ValueError, ModelLoadError, FileNotFoundError, OutputError))


if __name__ == "__main__":
    sys.exit(main())
