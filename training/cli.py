"""``emostream-train`` / ``python -m training``: train | evaluate | ablate | export.

Settings come from ``config.toml``'s ``[training.*]`` sections (``--config``); flags override them.
Relative paths in the config file are taken relative to the file's folder.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence

from training.checkpoint import CheckpointError
from training.cli_common import add_common, add_train_flags, load_config, world
from training.closed_pipe import run_until_pipe_closes
from training.distributed import Dist
from training.distributed import shutdown as shutdown_distributed
from training.evaluate_cli import cmd_evaluate, cmd_export
from training.settings import TEXT_DTYPES, ConfigError
from training.text_cli import add_text_parser, cmd_text
from training.train_cli import cmd_ablate, cmd_train
from training.weights import ModelError

__all__ = ["main"]

logger = logging.getLogger(__name__)


EPILOG = """commands:
  train     train one model (mode text|audio|fusion) into a run folder: config.json, history.json,
            metrics.json, learning_curves.png, confusion_<set>.png, model.pt (and --out, if given)
  evaluate  evaluate a checkpoint on MELD (+ RAVDESS/EmoDB held-out speakers): --split test --json OUT
  ablate    train and evaluate text-only, audio-only and fusion; writes ablation.md + ablation.json
  export    check a checkpoint loads, then copy it (e.g. to models/emostream-default.pt) and print its summary
  text      fine-tune the text branch on speaker-tagged MELD lines + train its past-context module;
            --audio-from CKPT carries CKPT's audio branch over (evaluate --context past scores the context)

example (the shipped default):
  emostream-train train --text-trainable-layers 3 --lr-encoder 1e-4 --epochs 8 --out models/emostream-default.pt

data-parallel (train, ablate) on N processes of one machine (gloo on CPU, NCCL with one GPU each):
  torchrun --standalone --nproc-per-node N -m training train ...   (same flags; rank 0 writes the files)
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="emostream-train",
        description="Train and evaluate emostream's late-fusion (text + audio) emotion classifier.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True)
    tr = sub.add_parser("train", help="train one model into a run folder")
    add_common(tr)
    add_train_flags(tr)
    tr.add_argument("--out", help="also write the checkpoint here (e.g. models/emostream-default.pt)")
    ev = sub.add_parser("evaluate", help="evaluate a checkpoint")
    add_common(ev)
    ev.add_argument("--checkpoint", required=True)
    ev.add_argument("--split", choices=("dev", "test"), default="test")
    ev.add_argument("--json", dest="json_out", help="write the metrics JSON here")
    ev.add_argument("--figure", help="write the main confusion matrix PNG here")
    ev.add_argument("--text-dtype", choices=TEXT_DTYPES, default="float32",
                    help="run the text encoder in this dtype (the service's [classifier] text_dtype)")  # fmt: skip
    ab = sub.add_parser("ablate", help="text-only vs audio-only vs fusion")
    add_common(ab)
    add_train_flags(ab)
    ab.add_argument("--out", help="folder for ablation.md + ablation.json (default: the run folder)")
    ev.add_argument(
        "--context",
        choices=("none", "past"),
        default="none",
        help="text branch reads nothing but the line (none) or also the dialogue's past lines (past)",
    )
    add_text_parser(sub, add_common)
    ex = sub.add_parser("export", help="verify and copy a checkpoint")
    ex.add_argument("--checkpoint", required=True)
    ex.add_argument("--out", required=True)
    ex.add_argument("-v", "--verbose", action="store_true")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """``emostream-train``; returns the exit status. A closed stdout (``... | head``) ends it quietly."""
    return run_until_pipe_closes(lambda: _main(argv))


def _main(argv: Sequence[str] | None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    args.argv = list(argv) if argv is not None else None

    def text(a: argparse.Namespace) -> int:
        return cmd_text(a, load_config)

    commands = {"train": cmd_train, "evaluate": cmd_evaluate, "ablate": cmd_ablate, "export": cmd_export, "text": text}
    if Dist().world != world() and args.command not in ("train", "ablate"):
        print(f"emostream-train: error: {args.command} runs in one process; only train and ablate run under "
              "torchrun", file=sys.stderr)  # fmt: skip
        return 2
    try:
        return commands[args.command](args)
    except (ConfigError, CheckpointError, ModelError, FileNotFoundError, ValueError) as exc:
        print(f"emostream-train: error: {exc}", file=sys.stderr)
        return 2
    finally:
        shutdown_distributed()
