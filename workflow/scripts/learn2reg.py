"""Rule ``learn2reg_split``: ``mgicon learn2reg`` on a Learn2Reg dataset of the config."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir)))  # noqa: F821 (snakemake is injected)
from _log import logged  # noqa: E402

with logged(snakemake):  # noqa: F821
    import torch

    from mgicon.cli import main
    from mgicon.data.adapters import learn2reg_json
    from mgicon.vocabulary import IO_SIMILARITY

    sm = snakemake  # noqa: F821
    p, ev = sm.params.config, sm.params.config["evaluation"]
    torch.set_num_threads(max(1, sm.threads))
    dataset_json = learn2reg_json(sm.wildcards.dataset, p["source"], Path(p["resources"]))
    similarity = IO_SIMILARITY[p["io"]]
    args = ["learn2reg", "--dataset-json", str(dataset_json), "--split", sm.wildcards.split]
    released = p["released"] or {}
    args += ["--model", str(sm.input.get("checkpoint") or released["model"]), "--out", sm.output.fields]
    args += ["--input-shape", *map(str, released["input_shape"])] if released.get("input_shape") else []
    args += ["--zip-out", sm.output.zip, "--device", ev["device"], "--seed", str(p["seed"])]
    args += ["--io-iterations", str(ev["io_iterations"] if similarity else 0), "--io-lr", str(ev["io_lr"])]
    args += ["--io-sim", similarity] if similarity else []
    args += ["--bf16"] if ev["bf16"] else []
    code = main(args)
    if code:
        raise RuntimeError(f"mgicon learn2reg exited with {code} (its message is above)")
