"""DVC stage fetch_sentinel: S2 L2A / S1 / Landsat chips and maps per site -> data/raw/sentinel/."""
import _interpreter  # noqa: F401,I001 - first: re-runs this script with the project's Python if needed
from terrapipe.stage import run_fetch_stage

if __name__ == "__main__":
    run_fetch_stage("sentinel", __doc__)
