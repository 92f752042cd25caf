"""Run the ``run`` stage: ``python pipelines/run.py -c configs/default.yaml`` (same as ``mnist99 run``)."""
import sys

from mnist99.cli import main

if __name__ == "__main__":
    sys.exit(main(stage="run"))
