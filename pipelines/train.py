"""Run the ``train`` stage: ``python pipelines/train.py -c configs/default.yaml`` (same as ``mnist99 train``)."""
import sys

from mnist99.cli import main

if __name__ == "__main__":
    sys.exit(main(stage="train"))
