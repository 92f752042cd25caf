"""Run the ``ensemble`` stage: ``python pipelines/ensemble.py -c configs/default.yaml`` (same as ``mnist99 ensemble``)."""
import sys

from mnist99.cli import main

if __name__ == "__main__":
    sys.exit(main(stage="ensemble"))
