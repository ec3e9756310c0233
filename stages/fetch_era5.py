"""DVC stage fetch_era5: ERA5 monthly means for each AOI with selected sites and each year -> data/raw/era5/*.nc."""
import _interpreter  # noqa: F401,I001 - first: re-runs this script with the project's Python if needed
from terrapipe.stage import run_fetch_stage

if __name__ == "__main__":
    run_fetch_stage("era5", __doc__)
