"""What the benchmark scripts share: the default-model flags and one load of the model and its calibration.

Every benchmark prunes the default model on `--nsamples` x `--seqlen` WikiText-2 calibration
samples (validation as the pool when there is no train split) and evaluates on the test text.
"""

from __future__ import annotations

import argparse

from lib.data import get_loaders
from lib.models.checks import effective_seqlen
from lib.models.loading import DEFAULT_MODEL, load_model


def add_model_args(parser: argparse.ArgumentParser) -> None:
    """--model, --data_dir, --nsamples (32), --seqlen (512), --device."""
    parser.add_argument("--model", default=DEFAULT_MODEL)
    parser.add_argument("--data_dir", default=None)
    parser.add_argument("--nsamples", type=int, default=32)
    parser.add_argument("--seqlen", type=int, default=512)
    parser.add_argument("--device", default=None)


def load_calibrated(args: argparse.Namespace, seed: int = 0):
    """(model, tokenizer, seqlen, samples: list of [1, seqlen] ids, test encoding) for `add_model_args` flags."""
    model, tokenizer = load_model(args.model, device=args.device)
    seqlen = effective_seqlen(model, args.seqlen)
    trainloader, testenc = get_loaders("wikitext2", args.nsamples, seed, seqlen, tokenizer, args.data_dir)
    return model, tokenizer, seqlen, [inp for inp, _ in trainloader], testenc
