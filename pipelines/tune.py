"""Run the ``tune`` stage: ``python pipelines/tune.py -c configs/tune.yaml`` (same as ``mnist99 tune``)."""
import sys

from mnist99.cli import main

if __name__ == "__main__":
    sys.exit(main(stage="tune"))
