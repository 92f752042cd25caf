"""The pipeline's stages: each module exposes one ``run(cfg) -> dict`` entry function."""
