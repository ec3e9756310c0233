"""DVC stage fetch_deepearth: DeepEarth central-Florida observations -> data/raw/deepearth/ (HF parquet layout)."""
import _interpreter  # noqa: F401,I001 - first: re-runs this script with the project's Python if needed
from terrapipe.stage import run_fetch_stage

if __name__ == "__main__":
    run_fetch_stage("deepearth", __doc__)
