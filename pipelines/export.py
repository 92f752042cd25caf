"""Run the ``export`` stage: ``python pipelines/export.py -c configs/default.yaml`` (same as ``mnist99 export``)."""
import sys

from mnist99.cli import main

if __name__ == "__main__":
    sys.exit(main(stage="export"))
