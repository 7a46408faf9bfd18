"""What every job shares: logging set-up and one readable error line for bad input."""
from __future__ import annotations

import logging
import sys

from raycluster.errors import CheckpointError, ConfigError, EmbeddingWidthError, ShardNotFoundError

# Errors caused by the user's input or config: shown as one line, exit status 2. Anything else
# is a bug and keeps its traceback.
USER_ERRORS = (ConfigError, ShardNotFoundError, EmbeddingWidthError, CheckpointError, FileNotFoundError, ValueError)


def setup_logging() -> None:
    import os

    if not sys.stdout.isatty():
        # Ray Data logs a multi-line progress block every 10 s when output is not a terminal
        # (hundreds of lines an extraction); once a minute is enough in a log file. Read when
        # ray.data is first imported, so set before any job imports it.
        os.environ.setdefault("RAY_DATA_NON_TTY_PROGRESS_LOG_INTERVAL", "60")
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s %(name)s] %(message)s", datefmt="%H:%M:%S",
                        force=True)
    logging.getLogger("faiss.loader").setLevel(logging.WARNING)  # lists every CPU-feature build it tries


def hydra_job(run):
    """Turn `run(cfg: RunConfig)` into a job's main(): Hydra composes configs/ (command-line
    overrides, a saved resolved config in output_dir/.hydra), logging is set up, the config is
    validated, and user errors become one line and exit status 2."""
    import hydra

    from raycluster.config import CONFIG_DIR, RunConfig

    @hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="config")
    def main(cfg):
        setup_logging()
        return run_or_exit(lambda: run(run_or_exit(RunConfig.from_hydra, cfg)))

    return main


def run_or_exit(fn, *args):
    """Call fn(*args); on a user error print `error: ...` and exit 2 instead of a traceback."""
    try:
        return fn(*args)
    except USER_ERRORS as err:
        logging.getLogger("raycluster").error("%s: %s", type(err).__name__, err)
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
