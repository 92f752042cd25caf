"""Run the ``predict`` stage (same as ``mnist99 predict``):

    python pipelines/predict.py --model exports/mnist99-ensemble.keras digit.png
"""
import sys

from mnist99.cli import main

if __name__ == "__main__":
    sys.exit(main(stage="predict"))
