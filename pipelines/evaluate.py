"""Run the ``evaluate`` stage (same as ``mnist99 evaluate``):

    python pipelines/evaluate.py --model exports/mnist99-ensemble.keras
"""
import sys

from mnist99.cli import main

if __name__ == "__main__":
    sys.exit(main(stage="evaluate"))
