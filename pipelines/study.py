"""Run the ``study`` stage: ``python pipelines/study.py -c configs/studies/activations.yaml`` (same as ``mnist99 study``)."""
import sys

from mnist99.cli import main

if __name__ == "__main__":
    sys.exit(main(stage="study"))
