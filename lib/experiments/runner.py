"""The experiment runner: runs the steps of lib.experiments.plan as subprocesses, each logged to
logs/<step>.log and marked done in markers/<step>.done (lib.experiments.markers), then the summary.

Resuming: a step whose marker is there with the same command, and whose outputs are all still there and sound
(`lib.experiments.rows.output_problem`), is skipped; a missing output runs it again; a damaged JSON output is kept
as PATH.damaged-<time> and the step runs again. A finished step whose command has changed stops the run before any
step runs (use another OUT, or delete that marker and those of the steps after it). An interrupted fine-tune resumes
from its latest complete checkpoint (`lib.training.checkpoints.latest_complete_checkpoint`; the fine-tuning CLI
resolves `--resume_from_checkpoint latest` with the same function); a checkpoint left by an interrupted fine-tune
with other settings stops the run. A failed step stops the run with its exit status and the tail of its log.

Nothing here prints: progress lines go to `say` (the CLI prints them), errors are the exceptions below.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

from lib.core.cli import Interrupted
from lib.experiments.layout import CHECKPOINT_GLOB, DONE_SUFFIX, SUMMARY_STEP, Layout
from lib.experiments.markers import Marker, read_marker, read_signature, signature, write_marker, write_started
from lib.experiments.plan import Plan, Step, build_plan
from lib.experiments.rows import output_problem
from lib.experiments.settings import Settings
from lib.training.checkpoints import latest_complete_checkpoint

LOG_TAIL_LINES = 12
RESUME_ARGS = ("--resume_from_checkpoint", "latest")
STEP_ENVIRONMENT = {"PYTHONUNBUFFERED": "1", "TOKENIZERS_PARALLELISM": "false"}


class RunStopped(ValueError):
    """The run cannot go on as asked (a changed command, a foreign checkpoint); one line, exit 2."""


class StepFailed(Exception):
    """A step exited with `status`; `tail` holds the last lines of its log."""

    def __init__(self, status: int, message: str, tail: list[str]):
        super().__init__(message)
        self.status, self.tail = status, tail


class StepInterrupted(Exception):
    """The runner was interrupted by `signum` while a step ran (the step ended itself first)."""

    def __init__(self, signum: int, message: str):
        super().__init__(message)
        self.signum = signum


@dataclass
class MarkerState:
    """Whether a step is done: `done`; else why not (`changed`: another command finished it; `missing`: an output
    that is gone; `damaged`: [(output, problem)])."""

    done: bool = False
    changed: bool = False
    missing: str | None = None
    damaged: list[tuple[str, str]] = field(default_factory=list)


@dataclass
class Runner:
    settings: Settings
    repo: str
    say: Callable[[str], None]
    ran: int = 0

    def __post_init__(self) -> None:
        self.layout = Layout(self.settings.out)
        self.dry_run = bool(self.settings.dry_run)

    # ------------------------------------------------------------ the run

    def run(self) -> Plan:
        """Every step of the plan (or its command, in a dry run), then the summary; returns the plan."""
        s = self.settings
        plan = build_plan(s, self.repo)
        self.say(f"experiments: {' '.join(s.words('exps'))}; seeds {' '.join(s.words('seeds'))} (fine-tuned: "
                 f"{' '.join(s.words('ft_seeds'))}); model {s.model}; OUT {s.out}" + (f"; preset {s.preset}" if s.preset
                                                                                      else ""))
        self.check_before(plan.steps)
        for step in plan.steps:
            self.step(step)
        if not self.dry_run:
            self.summary(plan.expected_rows)
            self.say(f"finished: {self.ran} step(s) run; table {self.layout.results_md}, plot {self.layout.results_png}")
        return plan

    def check_before(self, steps: Sequence[Step]) -> None:
        """Stop before the first step when a finished step's command changed or a foreign checkpoint waits."""
        for step in steps:
            state = self.marker_state(step)
            if state.changed:
                raise RunStopped(f"step {step.name} finished earlier with other settings "
                                 f"({self.layout.done_marker(step.name)}). Use another OUT, or delete that marker and "
                                 "the markers of the steps after it to redo them")
            if step.finetune_dir is not None and not state.done:
                self.check_checkpoints(step)

    def step(self, step: Step) -> None:
        """Skip `step` when done, else run it (a fine-tune from its latest complete checkpoint)."""
        if self.is_done(step):
            return
        command = step.command
        if step.finetune_dir is not None and latest_complete_checkpoint(Path(step.finetune_dir)) is not None:
            self.say(f"resume {step.name} from the latest complete checkpoint in {step.finetune_dir}")
            command += RESUME_ARGS
        if self.dry_run:
            self.say(f"would run {step.name}: {' '.join(command)}")
            return
        sig = signature(step.command, self.settings.out)
        os.makedirs(self.layout.markers, exist_ok=True)
        write_started(self.layout.started_marker(step.name), sig)
        started = time.monotonic()
        self.run_logged(step.name, command)
        seconds = int(time.monotonic() - started)
        write_marker(self.layout.done_marker(step.name),
                     Marker(sig, seconds, tuple(self.layout.relative(path) for path in step.outputs)))
        Path(self.layout.started_marker(step.name)).unlink(missing_ok=True)
        self.say(f"done {step.name} ({seconds} s)")
        self.ran += 1
        if step.finetune_dir is not None and self.settings.keep_checkpoints != "1":
            remove_checkpoints(step.finetune_dir)

    def summary(self, expected_rows: Sequence[str]) -> None:
        """results.md and results.png, unless they are newer than every step's marker."""
        results = Path(self.layout.results_md)
        if results.is_file() and Path(self.layout.results_png).is_file():
            written = results.stat().st_mtime_ns
            markers = Path(self.layout.markers).glob("*" + DONE_SUFFIX)
            if all(marker.stat().st_mtime_ns <= written for marker in markers):
                self.say(f"skip summary: {self.layout.results_md} is newer than every step")
                return
        self.run_logged(SUMMARY_STEP, [self.settings.python, f"{self.repo}/scripts/summarize_experiments.py", "--out",
                                       self.settings.out, "--expect", *expected_rows])

    # ------------------------------------------------------------ markers and checkpoints

    def marker_state(self, step: Step) -> MarkerState:
        """What markers/<step>.done says about `step` now (reads only)."""
        path = self.layout.done_marker(step.name)
        if not os.path.isfile(path):
            return MarkerState()
        marker = read_marker(path)
        if marker.signature != signature(step.command, self.settings.out):
            return MarkerState(changed=True)
        outputs = [self.layout.path(relative) for relative in marker.outputs]
        missing = next((output for output in outputs if not os.path.exists(output)), None)
        if missing is not None:
            return MarkerState(missing=missing)
        damaged = [(output, problem) for output in outputs if output.endswith(".json")
                   if (problem := output_problem(output))]
        return MarkerState(done=not damaged, damaged=damaged)

    def is_done(self, step: Step) -> bool:
        """Say whether `step` is skipped or redone (and why); a damaged output is set aside (not in a dry run)."""
        state = self.marker_state(step)
        if state.missing is not None:
            self.say(f"redo {step.name}: its output {state.missing} is missing")
        for output, problem in state.damaged:
            if self.dry_run:
                self.say(f"redo {step.name}: {output}: it {problem}")
                continue
            os.rename(output, f"{output}.damaged-{time.strftime('%Y%m%d-%H%M%S')}")
            self.say(f"redo {step.name}: {output}: it {problem}; kept it as {output}.damaged-<time> and running the "
                     "step again")
        if state.done:
            self.say(f"skip {step.name}: done")
        return state.done

    def check_checkpoints(self, step: Step) -> None:
        """A checkpoint of an interrupted fine-tune with another command is never resumed: stop instead."""
        started = self.layout.started_marker(step.name)
        recorded = read_signature(started)
        checkpoints = checkpoint_dirs(step.finetune_dir)
        if recorded is None or not checkpoints or recorded == signature(step.command, self.settings.out):
            return
        shown = latest_complete_checkpoint(Path(step.finetune_dir)) or checkpoints[-1]
        raise RunStopped(f"{shown} comes from an interrupted {step.name} with other settings ({started}); delete "
                         f"{step.finetune_dir} to start it again")

    # ------------------------------------------------------------ subprocesses

    def run_logged(self, name: str, command: Sequence[str]) -> None:
        """Run `command` with its output appended to logs/<name>.log; raise StepFailed when it fails."""
        log = self.layout.log(name)
        os.makedirs(self.layout.logs, exist_ok=True)
        self.say(f"run  {name} (log: {log})")
        with open(log, "a") as f:
            f.write(f"### {time.strftime('%Y-%m-%d %H:%M:%S')} {' '.join(command)}\n")
        with open(log, "ab") as f:
            status = run_to(f, command, step_environment(self.settings))
        if status == 0:
            return
        if status < 0:
            raise StepInterrupted(-status, f"interrupted by {signal.Signals(-status).name} during step {name} (its "
                                  f"log: {log}); rerun the same command to resume")
        tail = Path(log).read_text(errors="replace").splitlines()[-LOG_TAIL_LINES:]
        raise StepFailed(status, f"step {name} failed (exit {status}); see its log: {log}", tail)


def step_environment(settings: Settings) -> dict[str, str]:
    """The environment of every step: this one, unbuffered output, no tokenizer threads, the preset's exports."""
    env = dict(os.environ)
    for name, value in settings.environment.items():
        env[name] = env.get(name) or value
    return env | STEP_ENVIRONMENT


def run_to(log, command: Sequence[str], env: dict[str, str]) -> int:
    """Run `command` with stdout and stderr to the open file `log`: its exit status (128 + N when a signal N ended
    it, 127 / 126 when it cannot be started), or -N when this process was interrupted by signal N meanwhile (the
    step got the signal too, or is sent it, and ended itself)."""
    try:
        process = subprocess.Popen(list(command), stdout=log, stderr=subprocess.STDOUT, env=env)
    except OSError as err:
        log.write(f"{command[0]}: {err.strerror}\n".encode())
        return 127 if isinstance(err, FileNotFoundError) else 126
    try:
        status = process.wait()
    except (KeyboardInterrupt, Interrupted) as err:
        signum = getattr(err, "signum", signal.SIGINT)
        if signum != signal.SIGINT:  # Ctrl-C reached the whole process group; SIGTERM / SIGHUP only this process
            process.send_signal(signum)
        process.wait()
        return -signum
    return 128 - status if status < 0 else status


def checkpoint_dirs(directory: str) -> list[Path]:
    """The checkpoint-N entries of a fine-tune's output directory, by step."""
    found = [p for p in Path(directory).glob(CHECKPOINT_GLOB) if p.name.split("-", 1)[1].isdigit()]
    return sorted(found, key=lambda p: int(p.name.split("-", 1)[1]))


def remove_checkpoints(directory: str) -> None:
    """Delete the checkpoint-* of a finished fine-tune (KEEP_CHECKPOINTS=0)."""
    for path in Path(directory).glob(CHECKPOINT_GLOB):
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()
