"""Open the MLflow UI on the project's store: ``python pipelines/ui.py --port 5000`` (same as ``mnist99 ui``)."""
import sys

from mnist99.cli import main

if __name__ == "__main__":
    sys.exit(main(stage="ui"))
