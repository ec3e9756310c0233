"""DVC stage fetch_alphaearth: AlphaEarth points -> data/raw/alphaearth/ (metadata CSV + [N,64] tensor)."""
import _interpreter  # noqa: F401,I001 - first: re-runs this script with the project's Python if needed
from terrapipe.stage import run_fetch_stage

if __name__ == "__main__":
    run_fetch_stage("alphaearth", __doc__)
