"""Run the ``prepare`` stage: ``python pipelines/prepare.py -c configs/default.yaml`` (same as ``mnist99 prepare``)."""
import sys

from mnist99.cli import main

if __name__ == "__main__":
    sys.exit(main(stage="prepare"))
