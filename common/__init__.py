"""nanokoel common: the project-wide helpers every stage shares, none of them about speech or text.

    config.py     the config system: a dataclass schema, YAML values, key=value overrides (OmegaConf)
    derived.py    tensors derived from parameters for inference (matmul layouts), rebuilt when they change
    fileio.py     atomic writes: nothing is half-written when a job dies mid-write
    optim.py      the trainings' Adam / AdamW, with torch's fused kernel
    parallel.py   a pool of spawned worker processes with progress reported back (tokenisation, preference pairs)

Imports: nothing else of the project (a leaf package, the bottom layer).
"""
