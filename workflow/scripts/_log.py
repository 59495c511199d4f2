"""Route a rule script's output into its ``log:`` file and turn errors into one clear line there."""

import contextlib
import sys
import traceback


@contextlib.contextmanager
def logged(snakemake):
    log = snakemake.log[0] if snakemake.log else None
    stream = open(log, "w", encoding="utf-8") if log else sys.stderr
    with contextlib.redirect_stdout(stream), contextlib.redirect_stderr(stream):
        try:
            yield
        except Exception as exc:
            traceback.print_exc()
            print(f"error: {exc}", file=stream)
            stream.flush()
            raise SystemExit(f"{snakemake.rule}: {exc}") from None
        finally:
            stream.flush()
